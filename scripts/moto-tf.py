#!/usr/bin/env python3
"""Helpers for applying infra/ on moto (scripts/test-infra.sh apply|destroy).

  moto-tf.py proxy LISTEN_PORT MOTO_URL
      An HTTP proxy in front of moto that answers the Step Functions calls
      moto lacks and the AWS provider makes (ValidateStateMachineDefinition,
      ListStateMachineVersions; ListStateMachineAliases when moto refuses it),
      keeps the SQS RedriveAllowPolicy attribute moto does not know, and
      forwards everything else.
  moto-tf.py wait URL
      Waits until URL answers.
  moto-tf.py zips DIR
      Writes DIR/<function>/bootstrap.zip for the four functions: a zip with
      a `bootstrap` file (moto stores the package; nothing runs it).
  moto-tf.py secret ENDPOINT NAME VALUE
      Creates a Secrets Manager secret on the emulator and prints its ARN.
"""

import http.client
import io
import json
import os
import sys
import time
import urllib.parse
import urllib.request
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

FUNCTIONS = ("agentrun-api", "agentrun-step", "agentrun-finalize", "agentrun-sse-relay")

# Answers for what moto does not implement (empty results).
STUBS = {
    "AWSStepFunctions.ValidateStateMachineDefinition": {"result": "OK", "diagnostics": []},
    "AWSStepFunctions.ListStateMachineVersions": {"stateMachineVersions": []},
}
# Forwarded first; answered with this when moto refuses.
FALLBACKS = {
    "AWSStepFunctions.ListStateMachineAliases": {"stateMachineAliases": []},
}
# SQS queue attributes moto refuses, kept here by queue name.
SQS_KEPT_ATTRIBUTES = ("RedriveAllowPolicy",)
HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer", "upgrade"}


def proxy(listen_port, upstream):
    target = urllib.parse.urlsplit(upstream)
    kept = {}  # queue name -> {attribute: value}

    def queue_name(request):
        return str(request.get("QueueUrl", "")).rstrip("/").rsplit("/", 1)[-1]

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def answer(self, status, body, headers):
            self.send_response(status)
            for name, value in headers:
                if name.lower() not in HOP_BY_HOP and name.lower() != "content-length":
                    self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def answer_json(self, document):
            body = json.dumps(document).encode()
            self.answer(200, body, [("Content-Type", "application/x-amz-json-1.0")])

        def forward(self, body):
            connection = http.client.HTTPConnection(target.hostname, target.port, timeout=120)
            headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP and k.lower() != "content-length"}
            connection.request(self.command, self.path, body=body, headers=headers)
            response = connection.getresponse()
            data = response.read()
            connection.close()
            return response.status, data, response.getheaders()

        def sqs(self, operation, body):
            """SQS (JSON protocol) with the attributes moto refuses kept here; None to forward as is."""
            request = json.loads(body or b"{}")
            name = queue_name(request)
            if operation in ("AmazonSQS.SetQueueAttributes", "AmazonSQS.CreateQueue"):
                attributes = request.get("Attributes") or {}
                ours = {k: attributes.pop(k) for k in list(attributes) if k in SQS_KEPT_ATTRIBUTES}
                if not ours:
                    return None
                if operation == "AmazonSQS.CreateQueue":
                    name = str(request.get("QueueName", ""))
                # An empty value removes the attribute, as SQS does.
                stored = kept.setdefault(name, {})
                for key, value in ours.items():
                    if value:
                        stored[key] = value
                    else:
                        stored.pop(key, None)
                if operation == "AmazonSQS.SetQueueAttributes" and not attributes:
                    return 200, b"{}", [("Content-Type", "application/x-amz-json-1.0")]
                return self.forward(json.dumps(request).encode())
            if operation == "AmazonSQS.GetQueueAttributes":
                names = request.get("AttributeNames") or []
                wanted = [k for k in SQS_KEPT_ATTRIBUTES if k in names or "All" in names]
                if not wanted:
                    return None
                rest = [k for k in names if k not in SQS_KEPT_ATTRIBUTES]
                if rest:
                    request["AttributeNames"] = rest
                    status, data, headers = self.forward(json.dumps(request).encode())
                    if status >= 400:
                        return status, data, headers
                    answer = json.loads(data or b"{}")
                else:
                    status, headers, answer = 200, [("Content-Type", "application/x-amz-json-1.0")], {}
                attributes = answer.setdefault("Attributes", {})
                for key in wanted:
                    if key in kept.get(name, {}):
                        attributes[key] = kept[name][key]
                return status, json.dumps(answer).encode(), headers
            if operation == "AmazonSQS.DeleteQueue":
                kept.pop(name, None)
            return None

        def handle_any(self):
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else None
            operation = self.headers.get("X-Amz-Target", "")
            if operation in STUBS:
                return self.answer_json(STUBS[operation])
            if operation.startswith("AmazonSQS."):
                handled = self.sqs(operation, body)
                if handled is not None:
                    return self.answer(*handled)
            status, data, headers = self.forward(body)
            if operation in FALLBACKS and status >= 400:
                return self.answer_json(FALLBACKS[operation])
            self.answer(status, data, headers)

        do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = handle_any

    server = ThreadingHTTPServer(("127.0.0.1", listen_port), Handler)
    server.daemon_threads = True
    server.serve_forever()


def wait(url, seconds=30):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url, timeout=1)
            return 0
        except Exception:
            time.sleep(0.2)
    print(f"{url} did not answer within {seconds} s", file=sys.stderr)
    return 1


def zips(directory):
    for function in FUNCTIONS:
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w") as archive:
            info = zipfile.ZipInfo("bootstrap", date_time=(2024, 1, 1, 0, 0, 0))
            info.external_attr = 0o755 << 16
            archive.writestr(info, "#!/bin/sh\necho placeholder for the moto apply\n")
        path = f"{directory}/{function}"
        os.makedirs(path, exist_ok=True)
        with open(f"{path}/bootstrap.zip", "wb") as handle:
            handle.write(buffer.getvalue())
    return 0


def secret(endpoint, name, value):
    import boto3

    client = boto3.client("secretsmanager", endpoint_url=endpoint)
    print(client.create_secret(Name=name, SecretString=value)["ARN"])
    return 0


def main(argv):
    if len(argv) >= 3 and argv[0] == "proxy":
        proxy(int(argv[1]), argv[2])
        return 0
    if len(argv) == 2 and argv[0] == "wait":
        return wait(argv[1])
    if len(argv) == 2 and argv[0] == "zips":
        return zips(argv[1])
    if len(argv) == 4 and argv[0] == "secret":
        return secret(argv[1], argv[2], argv[3])
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
