#!/usr/bin/env python3
"""Cross-checks the Terraform in infra/ against the Rust code it deploys.

(a) Environment: every setting the functions' code reads is set by Terraform
    for the functions that read it (the contract below), and every name the
    code reads is either in the contract or a plain-value alternative that is
    never set for Lambda.
(b) IAM: every AWS SDK call in the code maps to IAM actions granted to the
    roles of the functions that make it, on the right resources; no policy
    has a wildcard action.
(c) Documentation: every variable has a type and a description, every output
    a description, in every module and example.

Needs python-hcl2. Usage: crosscheck.py [REPO_ROOT]
"""

import re
import sys
from pathlib import Path

import hcl2

FUNCTIONS = ("api", "step", "finalize", "sse-relay")
ALL = FUNCTIONS
# The functions that get the LLM keys' secrets. Not sse-relay: it never calls
# an LLM, its role may read only the database secret, and the code reads every
# <NAME>_SECRET_ARN in its environment at cold start (failing if it cannot).
LLM_KEY_READERS = ("api", "step", "finalize")

# (a) The environment contract: name -> functions Terraform sets it for.
CONTRACT = {
    "DATABASE_URL_SECRET_ARN": ALL,
    "OPENAI_BASE_URL": ALL,
    "OPENAI_API_KEY_SECRET_ARN": LLM_KEY_READERS,  # only when llm_api_key_secret_arn is set
    "ANTHROPIC_BASE_URL": ALL,  # only when anthropic_base_url is set
    "ANTHROPIC_API_KEY_SECRET_ARN": LLM_KEY_READERS,  # only when anthropic_api_key_secret_arn is set
    "AGENTRUN_DB_CONNECTIONS": ALL,
    "AGENTRUN_DB_STATEMENTS": ALL,
    "HOT_TABLE": ALL,
    "EVENTS_TABLE": ALL,
    "AGENTRUN_OUTBOUND_ALLOW": ALL,
    "STATE_MACHINE_ARN": ("api", "finalize"),
    "AGENTRUN_ADMIN_KEY_SECRET_ARN": ("api",),  # only when the admin API is on
    "AGENTRUN_STREAM_MAX_PER_TEAM": ("sse-relay",),
    "AGENTRUN_STREAM_MAX_TOTAL": ("sse-relay",),
    "AGENTRUN_STREAM_MAX_SECONDS": ("sse-relay",),
    "AGENTRUN_STREAM_MAX_IDLE_SECONDS": ("sse-relay",),
    "AGENTRUN_STREAM_URL": ("api",),
    "AGENTRUN_MAX_WAIT_SECONDS": ("api",),
    "AGENTRUN_STEPS_PER_TASK": ("step",),
}

# Plain-value alternatives, read only locally or against an emulator: a
# secret's value never goes into a Lambda environment variable.
NOT_FOR_LAMBDA = {"DATABASE_URL", "OPENAI_API_KEY", "ANTHROPIC_API_KEY", "AGENTRUN_ADMIN_KEY", "AWS_ENDPOINT_URL"}

# (b) SDK operation -> IAM actions it needs. TransactWriteItems is authorized
# per item (there is no dynamodb:TransactWriteItems action).
SDK_ACTIONS = {
    ("sfn", "start_execution"): ["states:StartExecution"],
    ("sfn", "stop_execution"): ["states:StopExecution"],
    ("sfn", "describe_execution"): ["states:DescribeExecution"],
    ("sfn", "send_task_success"): ["states:SendTaskSuccess"],
    ("sfn", "send_task_failure"): ["states:SendTaskFailure"],
    ("sfn", "send_task_heartbeat"): ["states:SendTaskHeartbeat"],
    ("dynamodb", "get_item"): ["dynamodb:GetItem"],
    ("dynamodb", "put_item"): ["dynamodb:PutItem"],
    ("dynamodb", "update_item"): ["dynamodb:UpdateItem"],
    ("dynamodb", "delete_item"): ["dynamodb:DeleteItem"],
    ("dynamodb", "query"): ["dynamodb:Query"],
    ("dynamodb", "batch_write_item"): ["dynamodb:BatchWriteItem"],
    ("dynamodb", "transact_write_items"): [
        "dynamodb:PutItem",
        "dynamodb:UpdateItem",
        "dynamodb:DeleteItem",
        "dynamodb:ConditionCheckItem",
    ],
    ("secretsmanager", "get_secret_value"): ["secretsmanager:GetSecretValue"],
}

# (b) Which functions make each call, and on what: (file, operation) ->
# (functions, resource). "*" as the file matches any file.
USES = {
    ("sfn.rs", "start_execution"): (("api", "finalize"), "state_machine"),
    ("sfn.rs", "stop_execution"): (("api", "finalize"), "executions"),
    ("sfn.rs", "describe_execution"): (("api", "finalize"), "executions"),
    ("worker.rs", "send_task_success"): (("step",), "any"),
    ("worker.rs", "send_task_failure"): (("step",), "any"),
    ("worker.rs", "send_task_heartbeat"): (("step",), "any"),
    ("hot_store.rs", "get_item"): (ALL, "hot_table"),
    ("hot_store.rs", "query"): (ALL, "hot_table"),
    ("hot_store.rs", "put_item"): (("api", "step", "finalize"), "hot_table"),
    ("hot_store.rs", "update_item"): (("api", "step", "finalize"), "hot_table"),
    ("hot_store.rs", "delete_item"): (("api", "step", "finalize"), "hot_table"),
    ("hot_store.rs", "transact_write_items"): (("api", "step", "finalize"), "hot_table"),
    ("event_feed.rs", "query"): (ALL, "events_table"),
    ("event_feed.rs", "batch_write_item"): (("api", "step", "finalize"), "events_table"),
    ("*", "get_secret_value"): (ALL, "secrets"),
}

# Terraform expressions that name each kind of resource in a policy.
RESOURCE_EXPRESSIONS = {
    "state_machine": "aws_sfn_state_machine.run.arn",
    "executions": "local.execution_arns",
    "hot_table": "module.tables.hot_table_arn",
    "events_table": "module.tables.events_table_arn",
    "step_queue": "module.step_queue.arn",
    "finalize_queue": "module.finalize_queue.arn",
    "any": "*",
}

# Secrets each function may read (checked whether or not the code reads
# secrets yet: the ARNs are in its environment).
SECRETS = {
    "api": ["var.database_url_secret_arn", "var.llm_api_key_secret_arn", "var.anthropic_api_key_secret_arn", "local.admin_key_secret_arn"],
    "step": ["var.database_url_secret_arn", "var.llm_api_key_secret_arn", "var.anthropic_api_key_secret_arn"],
    "finalize": ["var.database_url_secret_arn", "var.llm_api_key_secret_arn", "var.anthropic_api_key_secret_arn"],
    "sse-relay": ["var.database_url_secret_arn"],
}

# What Lambda does with each function's role besides the code's calls.
SERVICE_GRANTS = {
    "step": [("step_queue", ["sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes", "sqs:ChangeMessageVisibility"])],
    "finalize": [("finalize_queue", ["sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes", "sqs:ChangeMessageVisibility"])],
}

ENV_READ = re.compile(r'(?:\bget\b|\benv::var(?:_os)?)\s*(?:\(\s*&?|,\s*)"([A-Z][A-Z0-9_]{2,})"')
# Names built from a list: const LIST: [&str; N] = ["A", "B"] and
# format!("{name}_SUFFIX") in the same file read A_SUFFIX and B_SUFFIX.
NAME_LIST = re.compile(r"const\s+\w+\s*:\s*\[&(?:'static\s+)?str;\s*\d+\]\s*=\s*\[([^\]]*)\]")
NAME_SUFFIX = re.compile(r'format!\(\s*"\{\w+\}(_[A-Z][A-Z0-9_]*)"')
CLIENT_FIELD = re.compile(r"\b(\w+)\s*:\s*aws_sdk_(\w+)::Client\b")
CLIENT_LOCAL = re.compile(r"\blet\s+(?:mut\s+)?(\w+)\s*=\s*aws_sdk_(\w+)::Client::new")


class Checks:
    def __init__(self):
        self.passed = 0
        self.failures = []

    def check(self, ok, message):
        if ok:
            self.passed += 1
        else:
            self.failures.append(message)
        return ok


def unq(value):
    """python-hcl2 keeps the quotes of string literals."""
    if isinstance(value, str) and len(value) >= 2 and value[0] == value[-1] == '"':
        return value[1:-1]
    return value


def load(path):
    with open(path, encoding="utf-8") as handle:
        return hcl2.load(handle)


def terraform_files(infra):
    return sorted(p for p in infra.rglob("*.tf") if ".terraform" not in p.parts)


def blocks(doc, kind):
    """(label(s), body) pairs of a block kind: one label for variable/output/module/locals-less kinds."""
    for entry in doc.get(kind, []):
        for label, body in entry.items():
            if label.startswith("__"):
                continue
            yield unq(label), body


def typed_blocks(doc, kind):
    """(type, name, body) of resource/data blocks."""
    for entry in doc.get(kind, []):
        for rtype, named in entry.items():
            if rtype.startswith("__"):
                continue
            for name, body in named.items():
                if name.startswith("__"):
                    continue
                yield unq(rtype), unq(name), body


def policy_statements(body):
    """Statements of an aws_iam_policy_document, dynamic ones included, as (actions, resources-expression)."""
    for statement in body.get("statement", []):
        yield statement
    for dynamic in body.get("dynamic", []):
        for label, spec in dynamic.items():
            if unq(label) == "statement":
                for content in spec.get("content", []):
                    yield content


def as_list(value):
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def env_keys(expression, local_values, seen=None):
    """Upper-case keys an environment expression can set, following local.* references."""
    seen = seen or set()
    text = expression if isinstance(expression, str) else repr(expression)
    keys = set(re.findall(r"\b([A-Z][A-Z0-9_]{2,})\s*=", text))
    if isinstance(expression, dict):
        keys |= {k for k in expression if re.fullmatch(r"[A-Z][A-Z0-9_]{2,}", k)}
    for name in re.findall(r"\blocal\.(\w+)", text):
        if name in local_values and name not in seen:
            seen.add(name)
            keys |= env_keys(local_values[name], local_values, seen)
    return keys


def env_secret_references(expression, local_values, seen=None):
    """(NAME_SECRET_ARN, reference) pairs an environment expression can set, following local.* references."""
    seen = seen or set()
    text = expression if isinstance(expression, str) else repr(expression)
    pairs = set(re.findall(r"\b([A-Z][A-Z0-9_]*_SECRET_ARN)\s*=\s*((?:var|local)\.\w+)", text))
    for name in re.findall(r"\blocal\.(\w+)", text):
        if name in local_values and name not in seen:
            seen.add(name)
            pairs |= env_secret_references(local_values[name], local_values, seen)
    return pairs


def main():
    repo = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).resolve().parents[2])
    infra = repo / "infra"
    checks = Checks()

    root = {}
    for name in ("main.tf", "iam.tf"):
        for kind, entries in load(infra / name).items():
            root.setdefault(kind, []).extend(entries)
    local_values = {}
    for entry in root.get("locals", []):
        local_values.update({k: v for k, v in entry.items() if not k.startswith("__")})

    # Function modules of the root module, by function.
    functions = {}
    for label, body in blocks(root, "module"):
        if unq(body.get("source")) == "./modules/function":
            function = unq(body["function_name"]).replace("${var.name}-", "")
            functions[function] = body
    checks.check(sorted(functions) == sorted(FUNCTIONS), f"function modules {sorted(functions)} are not {sorted(FUNCTIONS)}")

    # ------------------------------------------------------------------ (a)
    sources = sorted((repo / "shared" / "src").rglob("*.rs")) + sorted((repo / "functions").rglob("*.rs"))
    in_code = {}
    for path in sources:
        text = path.read_text(encoding="utf-8")
        names = set(ENV_READ.findall(text))
        for suffix in NAME_SUFFIX.findall(text):
            for listed in NAME_LIST.findall(text):
                names |= {base + suffix for base in re.findall(r'"([A-Z][A-Z0-9_]*)"', listed)}
        for name in names:
            in_code.setdefault(name, set()).add(str(path.relative_to(repo)))
    print("crosscheck: settings read by the code: " + ", ".join(sorted(in_code)))
    for name in sorted(in_code):
        checks.check(
            name in CONTRACT or name in NOT_FOR_LAMBDA,
            f"the code reads {name} ({', '.join(sorted(in_code[name]))}) but Terraform does not set it: "
            "add it to infra/ and to CONTRACT, or to NOT_FOR_LAMBDA if it is a local-only plain value",
        )
    not_yet = sorted(set(CONTRACT) - set(in_code))
    if not_yet:
        print("crosscheck: note: set by Terraform, not read by the code yet: " + ", ".join(not_yet))

    set_by_terraform = {
        function: env_keys(body.get("environment", ""), local_values) for function, body in functions.items()
    }
    for name, readers in CONTRACT.items():
        for function in FUNCTIONS:
            sets = name in set_by_terraform.get(function, set())
            if function in readers:
                checks.check(sets, f"Terraform does not set {name} for {function}")
            else:
                checks.check(not sets, f"Terraform sets {name} for {function}, which does not read it")
    for function, names in set_by_terraform.items():
        for name in sorted(names - set(CONTRACT)):
            checks.check(False, f"Terraform sets {name} for {function}: not in the contract")
        for name in sorted(names & NOT_FOR_LAMBDA):
            checks.check(False, f"Terraform sets the plain value {name} for {function}: pass a secret ARN instead")

    # ------------------------------------------------------------------ (b)
    documents = {}
    for path in terraform_files(infra):
        for rtype, name, body in typed_blocks(load(path), "data"):
            if rtype == "aws_iam_policy_document":
                documents[(path.relative_to(infra).as_posix(), name)] = body

    # No wildcard action anywhere.
    for (path, name), body in documents.items():
        for statement in policy_statements(body):
            for key in ("actions", "not_actions"):
                for action in as_list(statement.get(key)):
                    action = unq(action)
                    checks.check(
                        "*" not in action and not (key == "not_actions"),
                        f"{path}: policy {name} has {key} {action!r}",
                    )

    def grants(function):
        """(action, resources-text) pairs of a function's role policy."""
        policy = unq(functions[function]["policy_json"])
        match = re.search(r"data\.aws_iam_policy_document\.(\w+)\.json", policy)
        if not checks.check(match is not None, f"{function}: policy_json is not a policy document"):
            return []
        body = documents.get(("iam.tf", match.group(1)))
        if not checks.check(body is not None, f"{function}: policy document {match.group(1)} not in iam.tf"):
            return []
        pairs = []
        for statement in policy_statements(body):
            resources = statement.get("resources")
            text = " ".join(unq(r) for r in as_list(resources))
            for name in re.findall(r"\blocal\.(\w+)\b", text):
                text += " " + str(local_values.get(name, ""))
            for action in as_list(statement.get("actions")):
                pairs.append((unq(action), text))
        return pairs

    granted = {function: grants(function) for function in FUNCTIONS if function in functions}

    def has_grant(function, action, resource_kind):
        expression = RESOURCE_EXPRESSIONS[resource_kind]
        for granted_action, resources in granted.get(function, []):
            if granted_action != action:
                continue
            if expression == "*":
                if re.search(r'(^|\s)\*(\s|$)', resources):
                    return True
            elif expression in resources:
                return True
        return False

    calls = []
    for path in sources:
        text = path.read_text(encoding="utf-8")
        clients = {field: service for field, service in CLIENT_FIELD.findall(text) + CLIENT_LOCAL.findall(text)}
        if not clients:
            continue
        flat = re.sub(r"\s+", "", text)
        for field, service in clients.items():
            for op in re.findall(r"\b" + re.escape(field) + r"\.([a-z_]+)\(\)", flat):
                if op != "clone":  # a copy of the client, not a request
                    calls.append((path, service, op))
    print(f"crosscheck: {len(calls)} AWS SDK call sites: " + ", ".join(sorted({f'{s}.{o}' for _, s, o in calls})))
    checks.check(len(calls) > 0, "no AWS SDK call found in the code: is the scan still right?")
    for path, service, op in calls:
        actions = SDK_ACTIONS.get((service, op))
        if not checks.check(actions is not None, f"{path.name}: {service}.{op}() has no IAM actions in SDK_ACTIONS"):
            continue
        use = USES.get((path.name, op)) or USES.get(("*", op))
        if not checks.check(use is not None, f"{path.name}: {service}.{op}() is not in USES (which functions call it, on what)"):
            continue
        callers, kind = use
        for function in callers:
            for action in actions:
                if kind == "secrets":
                    ok = any(a == action for a, _ in granted.get(function, []))
                else:
                    ok = has_grant(function, action, kind)
                checks.check(ok, f"{function} calls {service}.{op}() ({path.name}) but its role lacks {action} on {kind}")

    for function, wanted in SECRETS.items():
        readable = " ".join(r for a, r in granted.get(function, []) if a == "secretsmanager:GetSecretValue")
        for reference in wanted:
            checks.check(reference in readable, f"{function} may not read the secret {reference}")
        for reference in {r for refs in SECRETS.values() for r in refs} - set(wanted):
            checks.check(reference not in readable, f"{function} may read the secret {reference}, which it does not need")

    # Every secret ARN Terraform puts in a function's environment is one its
    # role may read: the code reads them all at cold start, and one it may not
    # read stops the function (AccessDenied) before it handles anything.
    for function, body in functions.items():
        readable = " ".join(r for a, r in granted.get(function, []) if a == "secretsmanager:GetSecretValue")
        references = env_secret_references(body.get("environment", ""), local_values)
        names = {name for name in set_by_terraform.get(function, set()) if name.endswith("_SECRET_ARN")}
        checks.check(
            {name for name, _ in references} == names,
            f"{function}: cannot tell which secret each of {sorted(names)} names: set them as NAME = var.x or local.x",
        )
        for name, reference in sorted(references):
            checks.check(
                re.search(r"(?<![\w.])" + re.escape(reference) + r"\b", readable) is not None,
                f"{function} gets {name} = {reference}, a secret its role may not read (secretsmanager:GetSecretValue)",
            )

    for function, needs in SERVICE_GRANTS.items():
        for kind, actions in needs:
            for action in actions:
                checks.check(has_grant(function, action, kind), f"{function}'s event source mapping needs {action} on {kind}")

    machine = documents.get(("iam.tf", "state_machine"), {})
    sends = " ".join(
        " ".join(unq(r) for r in as_list(s.get("resources")))
        for s in policy_statements(machine)
        if "sqs:SendMessage" in [unq(a) for a in as_list(s.get("actions"))]
    )
    for kind in ("step_queue", "finalize_queue"):
        checks.check(RESOURCE_EXPRESSIONS[kind] in sends, f"the state machine may not send to the {kind}")

    # ------------------------------------------------------------------ (c)
    for path in terraform_files(infra):
        doc = load(path)
        where = path.relative_to(repo).as_posix()
        for name, body in blocks(doc, "variable"):
            checks.check("type" in body, f"{where}: variable {name} has no type")
            checks.check(bool(unq(body.get("description", ""))), f"{where}: variable {name} has no description")
        for name, body in blocks(doc, "output"):
            checks.check(bool(unq(body.get("description", ""))), f"{where}: output {name} has no description")

    for failure in checks.failures:
        print(f"crosscheck: FAILED: {failure}")
    print(f"crosscheck: {checks.passed} checks passed, {len(checks.failures)} failed")
    return 1 if checks.failures else 0


if __name__ == "__main__":
    sys.exit(main())
