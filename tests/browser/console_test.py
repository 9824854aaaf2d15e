"""The console in headless Chromium against `agentrun dev`.

Run by scripts/browser.sh, which starts the server on a fresh database with
this folder's agents and mock LLM scripts and passes, in the environment:
AGENTRUN_URL, AGENTRUN_API_KEY, AGENTRUN_ADMIN_KEY, AGENTRUN_DATABASE_URL,
CHROMIUM (the browser binary) and ARTIFACTS (where screenshots go).

Each check opens its own browser context (its own sessionStorage), signs in
through the form, and fails on any request to another origin, any script
error and any refused content-security-policy directive.
"""

import datetime
import hashlib
import json
import os
import re
import subprocess
import sys
import time
import traceback
import urllib.error
import urllib.request

from playwright.sync_api import expect, sync_playwright

BASE = os.environ["AGENTRUN_URL"].rstrip("/")
KEY = os.environ["AGENTRUN_API_KEY"]
ADMIN_KEY = os.environ["AGENTRUN_ADMIN_KEY"]
DATABASE_URL = os.environ["AGENTRUN_DATABASE_URL"]
ARTIFACTS = os.environ["ARTIFACTS"]
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
TIMEOUT_MS = 20_000

CHECKS = []
# Assertions wait as long as actions do.
expect.set_options(timeout=TIMEOUT_MS)


def check(fn):
    CHECKS.append(fn)
    return fn


def api(method, path, body=None, key=KEY):
    """The API called straight, for setting a check up and for what the
    console shows to be compared with."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(BASE + path, data=data, method=method)
    request.add_header("Authorization", f"Bearer {key}")
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            text = response.read().decode()
            return response.status, (json.loads(text) if text else None)
    except urllib.error.HTTPError as error:
        text = error.read().decode()
        return error.code, (json.loads(text) if text else None)


def finished_run(agent, text="Help me log in."):
    """A run of agent started through the API and waited for."""
    status, run = api("POST", "/v1/runs", {"agent": agent, "input": text})
    assert status in (201, 202), run
    status, run = api("GET", f"/v1/runs/{run['id']}?wait=30")
    assert status == 200 and run["status"] == "succeeded", run
    return run


def wait_for(page, what, predicate, timeout=TIMEOUT_MS / 1000):
    """Polls predicate; the page's wait lets its event handlers run."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        page.wait_for_timeout(100)
    raise AssertionError(f"timed out waiting for {what}")


class Browser:
    def __init__(self, playwright):
        self.browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=["--no-sandbox"]
        )
        # Every page a check opened; each one's problems fail the check.
        self.pages = []

    def page(self, width=1280, height=900):
        context = self.browser.new_context(
            viewport={"width": width, "height": height}, accept_downloads=True
        )
        page = context.new_page()
        page.set_default_timeout(TIMEOUT_MS)
        page.problems = []
        self.pages.append(page)
        origin = BASE
        page.on(
            "request",
            lambda r: None
            if r.url.startswith(origin + "/") or r.url.startswith(("data:", "blob:"))
            else page.problems.append(f"request to another origin: {r.url}"),
        )
        page.on("pageerror", lambda e: page.problems.append(f"script error: {e}"))
        page.on(
            "console",
            lambda m: page.problems.append(f"console {m.type}: {m.text}")
            if m.type == "error" and "Failed to load resource" not in m.text
            else None,
        )
        # Cancel, revoke and disable ask first; the checks say yes.
        page.on("dialog", lambda d: d.accept())
        return page


def shot(page, name):
    page.screenshot(path=os.path.join(ARTIFACTS, f"{name}.png"), full_page=True)


def sign_in(page, key=KEY, route="#/runs"):
    page.goto(f"{BASE}/console/{route}")
    page.fill("#api-key", key)
    page.press("#api-key", "Enter")
    expect(page.locator("#sign-out")).to_be_visible()


def start_from_console(page, agent, text):
    page.goto(f"{BASE}/console/#/start")
    expect(page.locator(f'#start-agent option[value="{agent}"]')).to_have_count(1)
    page.select_option("#start-agent", agent)
    page.fill("#start-input", text)
    page.click('#start-form button[type="submit"]')
    page.wait_for_url(re.compile(r"#/runs/[0-9a-f-]{36}$"))
    return page.url.rsplit("/", 1)[1]


def settle(page, selector):
    """Clicks a control of the runs list and waits for the list it asks for
    (the list is aria-busy while a request is out)."""
    page.click(selector)
    page.locator("#runs-body:not([aria-busy])").wait_for(state="attached")


def event_types(page):
    return page.eval_on_selector_all(
        "#timeline li[data-type]", "items => items.map(i => i.dataset.type)"
    )


def ledger_event_seqs(run_id):
    """The seq of every event of a finished run, from its event stream."""
    request = urllib.request.Request(f"{BASE}/v1/runs/{run_id}/events")
    request.add_header("Authorization", f"Bearer {KEY}")
    with urllib.request.urlopen(request, timeout=10) as response:
        lines = response.read().decode().splitlines()
    return [int(line[3:]) for line in lines if line.startswith("id:")]


def expire_stream_token(token):
    digest = hashlib.sha256(token.encode()).hexdigest()
    subprocess.run(
        [
            "psql", DATABASE_URL, "-qAt", "-v", "ON_ERROR_STOP=1", "-c",
            "UPDATE stream_tokens SET expires_at = now() - interval '1 second' "
            f"WHERE token_hash = '{digest}' RETURNING 1",
        ],
        check=True, capture_output=True, text=True,
    )


# ---------------------------------------------------------------- checks


@check
def signing_in_keeps_the_key_in_the_tab_and_a_wrong_key_is_told(browser):
    page = browser.page()
    page.goto(f"{BASE}/console/")
    expect(page.locator("#api-key")).to_be_focused()
    shot(page, "sign-in")
    page.fill("#api-key", "ak_wrong")
    page.press("#api-key", "Enter")
    expect(page.locator("#signin .alert")).to_be_visible()
    assert page.locator("#nav").is_hidden(), "a wrong key signed in"
    page.fill("#api-key", KEY)
    page.press("#api-key", "Enter")
    expect(page.locator("#runs-body")).to_be_visible()
    stored = page.evaluate("Object.values(sessionStorage)")
    assert KEY in stored, f"the key is not in sessionStorage: {stored}"
    assert page.evaluate("localStorage.length") == 0, "something went to localStorage"
    expect(page.locator("#key-kind")).to_have_text("team key")
    expect(page.locator('#nav a[data-route="operators"]')).to_be_hidden()
    page.click("#sign-out")
    expect(page.locator("#api-key")).to_be_visible()
    assert KEY not in page.evaluate("Object.values(sessionStorage)"), "sign-out kept the key"


@check
def a_run_started_from_the_console_streams_its_steps_live_and_shows_its_output(browser):
    page = browser.page()
    sign_in(page)
    run_id = start_from_console(page, "technical", "I cannot log in after changing phones.")
    # Live: events are on the page while the run still runs.
    seen_live = wait_for(
        page, "events while the run is running",
        lambda: len(event_types(page)) >= 2 and "run.succeeded" not in event_types(page),
    )
    assert seen_live
    expect(page.locator("#stream-state")).to_have_text("(live)")
    live_types = event_types(page)
    shot(page, "run-live")
    expect(page.locator("#run-status")).to_have_text("succeeded")
    types = event_types(page)
    assert len(types) > len(live_types), f"no event came after {live_types}"
    for expected in ["run.started", "step.started", "llm.completed", "tool.started",
                     "tool.completed", "step.completed", "run.succeeded"]:
        assert expected in types, f"{expected} not in the timeline: {types}"
    # Events are in order and none twice.
    seqs = page.eval_on_selector_all(
        "#timeline li[data-seq]", "items => items.map(i => Number(i.dataset.seq))"
    )
    assert seqs == sorted(set(seqs)), f"events out of order or repeated: {seqs}"
    assert seqs == ledger_event_seqs(run_id), "the timeline differs from the ledger"
    expect(page.locator("#output-validity")).to_have_text("valid")
    expect(page.locator("#run-output pre")).to_contain_text('"kb_article": "kb_12"')
    expect(page.locator("#run-steps details.step")).to_have_count(2)
    expect(page.locator("#run-steps .tool-call h4")).to_contain_text("search_kb")
    expect(page.locator("#run-stop-reason")).to_have_text("completed")
    expect(page.locator("#cancel-run")).to_be_hidden()
    shot(page, "run")


@check
def the_model_text_appears_as_it_is_written(browser):
    page = browser.page()
    sign_in(page)
    start_from_console(page, "writer", "My codes are on my old phone.")
    wait_for(
        page, "model text while the step runs",
        lambda: len(page.locator("pre.live-text:not([hidden])").all_text_contents()) == 1
        and len(page.locator("pre.live-text:not([hidden])").text_content()) > 0
        and "llm.completed" not in event_types(page),
    )
    shot(page, "run-streaming-text")
    expect(page.locator("#run-status")).to_have_text("succeeded")
    # What streamed is the answer's text in order; a piece sent while the
    # stream was being resumed (every 3 s here) shows as a gap (" … ").
    full = page.locator("#run-output pre").text_content()
    live = page.locator('section.step-group[data-step="1"] pre.live-text').text_content()
    assert live.startswith("Two-factor codes"), live
    at = 0
    for piece in live.split(" … "):
        found = full.find(piece, at)
        assert piece and found >= at, f"{piece!r} is not in order in {full!r}"
        at = found + len(piece)
    assert live.count(" … ") <= 2, f"most of the text was lost: {live!r}"
    expect(page.locator("#run-output pre")).to_contain_text("Reset 2FA")


@check
def an_approval_card_lets_the_run_go_on(browser):
    page = browser.page()
    sign_in(page)
    run_id = start_from_console(page, "support-triage", "I was charged twice for November.")
    card = page.locator("#approvals article.approval")
    expect(card).to_be_visible()
    expect(page.locator("#run-status")).to_have_text("waiting")
    expect(card).to_contain_text("issue_refund")
    expect(card).to_contain_text('"amount_cents": 7900')
    card.locator("textarea").fill("Duplicate charge confirmed.")
    audit(page, "approval")
    shot(page, "run-approval")
    card.locator("button.approve").click()
    expect(page.locator("#run-status")).to_have_text("succeeded")
    expect(page.locator("#run-output pre")).to_contain_text('"refund_cents": 7900')
    expect(page.locator('#timeline li[data-type="approval.answered"]')).to_contain_text(
        "Duplicate charge confirmed."
    )
    expect(page.locator('#timeline li[data-type="handoff"]')).to_contain_text("billing")
    _, approvals = api("GET", f"/v1/runs/{run_id}/approvals")
    answered = approvals["data"][0]
    assert answered["status"] == "approved", answered
    assert answered["comment"] == "Duplicate charge confirmed.", answered


@check
def cancel_works_from_the_run_page(browser):
    page = browser.page()
    sign_in(page)
    run_id = start_from_console(page, "slow", "Keep looking.")
    expect(page.locator('#timeline li[data-type="step.started"]').first).to_be_visible()
    expect(page.locator("#run-status")).to_have_text("running")
    page.click("#cancel-run")
    expect(page.locator("#run-status")).to_have_text("cancelled")
    expect(page.locator("#run-stop-reason")).to_have_text("cancelled")
    expect(page.locator("#run-stop-detail")).to_have_text("cancelled by the user")
    expect(page.locator("#cancel-run")).to_be_hidden()
    expect(page.locator('#timeline li[data-type="run.cancelled"]')).to_have_count(1)
    expect(page.locator("#stream-state")).to_have_text("(ended)")
    _, run = api("GET", f"/v1/runs/{run_id}")
    assert run["status"] == "cancelled", run
    shot(page, "run-cancelled")


@check
def a_dropped_stream_reconnects_with_a_fresh_token_and_misses_nothing(browser):
    page = browser.page()
    sign_in(page)
    urls = []
    page.on("request", lambda r: urls.append(r.url))
    run_id = start_from_console(page, "slow", "Keep looking.")
    expect(page.locator("#stream-state")).to_have_text("(live)")
    # The server ends each stream after 3 s (scripts/browser.sh).
    wait_for(page, "a reconnect", lambda: sum(u.endswith("/stream-token") for u in urls) >= 2, timeout=10)
    expect(page.locator("#stream-state")).to_have_text("(live)")
    count = event_types(page).count("step.completed")
    wait_for(page, "a step after the reconnect", lambda: event_types(page).count("step.completed") > count)
    page.click("#cancel-run")
    expect(page.locator("#stream-state")).to_have_text("(ended)")
    tokens = [u for u in urls if u.endswith("/stream-token")]
    streams = [u for u in urls if "/events?" in u]
    assert len(tokens) >= 2, f"no fresh token for the reconnect: {tokens}"
    assert len(set(streams)) >= 2 and "after=" in streams[-1], f"the reconnect did not resume: {streams}"
    seqs = page.eval_on_selector_all(
        "#timeline li[data-seq]", "items => items.map(i => Number(i.dataset.seq))"
    )
    assert seqs == ledger_event_seqs(run_id), f"the timeline has gaps or repeats: {seqs}"


@check
def the_runs_list_filters_pages_and_follows_an_open_run(browser):
    finished_run("technical")
    page = browser.page()
    sign_in(page)
    # An open run started elsewhere: the list shows it running, then
    # cancelled, without a reload.
    status, run = api("POST", "/v1/runs", {"agent": "slow", "input": "Keep looking."})
    assert status in (201, 202), run
    row = page.locator("#runs-table tbody tr", has=page.locator(f'a[href="#/runs/{run["id"]}"]'))
    expect(row).to_contain_text("running")
    shot(page, "runs")
    api("POST", f"/v1/runs/{run['id']}/cancel", {})
    expect(row).to_contain_text("cancelled")
    page.select_option("#filter-status", "succeeded")
    settle(page, '#runs-filter button[type="submit"]')
    expect(page.locator("#runs-table tbody tr").first).to_contain_text("succeeded")
    statuses = page.locator("#runs-table tbody tr td:nth-child(3)").all_text_contents()
    assert statuses and set(statuses) == {"succeeded"}, statuses
    page.select_option("#filter-status", "")
    page.fill("#filter-agent", "technical")
    settle(page, '#runs-filter button[type="submit"]')
    expect(page.locator("#runs-table tbody tr").first).to_contain_text("technical")
    agents = page.locator("#runs-table tbody tr td:nth-child(2)").all_text_contents()
    assert agents and all(a.startswith("technical ") for a in agents), agents
    tomorrow = (datetime.date.today() + datetime.timedelta(days=2)).isoformat()
    page.fill("#filter-agent", "")
    page.fill("#filter-after", tomorrow)
    settle(page, '#runs-filter button[type="submit"]')
    expect(page.locator("#runs-body")).to_contain_text("No runs match.")
    # Paging: more runs than a page holds.
    page.fill("#filter-after", "")
    page.select_option("#filter-limit", "10")
    per_page = 10
    for _ in range(per_page + 1):
        if api("GET", f"/v1/runs?limit={per_page}")[1].get("next_cursor"):
            break
        status, body = api("POST", "/v1/runs", {"agent": "technical", "input": "again"})
        assert status in (201, 202), body
    settle(page, '#runs-filter button[type="submit"]')
    expect(page.locator("#runs-next")).to_be_enabled()
    first_ids = page.locator("#runs-table tbody a").all_text_contents()
    settle(page, "#runs-next")
    expect(page.locator("#runs-first")).to_be_enabled()
    expect(page.locator("#runs-table tbody a").first).not_to_have_text(first_ids[0])
    second_ids = page.locator("#runs-table tbody a").all_text_contents()
    assert not set(first_ids) & set(second_ids), "the second page repeats the first"
    assert len(first_ids) == per_page, (len(first_ids), per_page)
    settle(page, "#runs-first")
    expect(page.locator("#runs-table tbody a").first).to_have_text(first_ids[0])


@check
def the_usage_chart_renders_the_days_cost(browser):
    page = browser.page()
    sign_in(page)
    finished_run("technical")
    today = datetime.datetime.now(datetime.timezone.utc).date().isoformat()
    _, usage = api("GET", f"/v1/usage?from={today}&to={today}")
    day = next(d for d in usage["data"] if d["day"] == today)
    assert day["cost_micros"] > 0, f"no cost today to draw: {day}"
    page.goto(f"{BASE}/console/#/usage")
    bar = page.locator(f'svg#usage-chart rect.bar[data-day="{today}"]')
    expect(bar).to_have_count(1)
    height = float(bar.get_attribute("height"))
    assert height > 0, "today's bar is flat"
    bars = page.locator("svg#usage-chart rect.bar")
    assert bars.count() == 30, bars.count()
    tallest = max(float(b.get_attribute("height")) for b in bars.all())
    assert height == tallest, "today has the only cost, so the tallest bar"
    money = f"{day['cost_micros'] / 1_000_000:.6f}".rstrip("0")
    money += "0" * max(0, 2 - len(money.split(".")[1]))
    title = bar.locator("title").text_content()
    assert money in title.replace(",", ""), f"{money} not in the bar's title {title!r}"
    box = bar.bounding_box()
    assert box and box["height"] > 10, f"today's bar is not drawn on screen: {box}"
    expect(page.locator("#budget-bar")).to_be_attached() if usage.get("tokens_today", {}).get(
        "daily_budget") else None
    expect(page.locator("#budget")).to_contain_text("used")
    expect(page.locator("#statement-table tbody tr").first).to_be_visible()
    with page.expect_download() as download_info:
        page.click("#download-csv")
    download = download_info.value
    path = os.path.join(ARTIFACTS, "statement.csv")
    download.save_as(path)
    lines = open(path, encoding="utf-8").read().splitlines()
    assert lines and "run_id" in lines[0], f"no CSV header: {lines[:1]}"
    _, statement = api("GET", f"/v1/usage/runs?month={today[:7]}&limit=1000")
    assert len(lines) - 1 == len(statement["data"]), (len(lines) - 1, len(statement["data"]))
    shot(page, "usage")


@check
def an_expired_or_foreign_stream_token_is_refused(browser):
    page = browser.page()
    sign_in(page)
    mine, other = finished_run("technical")["id"], finished_run("technical")["id"]
    status, token = api("POST", f"/v1/runs/{mine}/stream-token")
    assert status == 201, token
    probe = """async ([url]) => {
        const res = await fetch(url);
        const text = await res.text();
        const opened = await new Promise((resolve) => {
            const source = new EventSource(url);
            source.addEventListener('run.started', () => { source.close(); resolve('event'); });
            source.addEventListener('error', () => {
                const closed = source.readyState === EventSource.CLOSED;
                source.close();
                resolve(closed ? 'refused' : 'error');
            });
        });
        return { status: res.status, text, opened };
    }"""
    own = page.evaluate(probe, [f"{BASE}/v1/runs/{mine}/events?token={token['token']}"])
    assert own["status"] == 200 and own["opened"] == "event", f"the token does not stream its run: {own}"
    foreign = page.evaluate(probe, [f"{BASE}/v1/runs/{other}/events?token={token['token']}"])
    assert foreign["status"] == 401 and foreign["opened"] == "refused", f"foreign run: {foreign}"
    assert json.loads(foreign["text"])["error"]["code"] == "unauthorized", foreign
    expire_stream_token(token["token"])
    expired = page.evaluate(probe, [f"{BASE}/v1/runs/{mine}/events?token={token['token']}"])
    assert expired["status"] == 401 and expired["opened"] == "refused", f"expired: {expired}"
    # Another team's token for a run of this team.
    status, team = api("POST", "/v1/admin/teams", {"name": "browser-other"}, key=ADMIN_KEY)
    assert status == 201, team
    _, other_key = api("POST", f"/v1/admin/teams/{team['id']}/keys", {}, key=ADMIN_KEY)
    status, refused = api("POST", f"/v1/runs/{mine}/stream-token", key=other_key["key"])
    assert status == 404, f"another team got a token: {status} {refused}"
    # The key never goes into a URL the page asks for.
    page.goto(f"{BASE}/console/#/runs/{mine}")
    urls = []
    page.on("request", lambda r: urls.append(r.url))
    page.reload()
    expect(page.locator("#stream-state")).to_have_text("(ended)")
    assert any("token=st_" in u for u in urls), f"no stream token used: {urls}"
    assert not any(KEY in u for u in urls), "the API key went into a URL"


@check
def agent_versions_are_listed_and_two_are_diffed(browser):
    _, agents = api("GET", "/v1/agents")
    agent = next(a for a in agents["data"] if a["name"] == "technical")
    spec = dict(agent["spec"])
    spec["instructions"] = spec["instructions"] + " Cite the article."
    status, body = api("PUT", "/v1/agents/technical", spec)
    assert status in (200, 201), body
    page = browser.page()
    sign_in(page)
    page.goto(f"{BASE}/console/#/agents")
    row = page.locator("#agents-table tbody tr", has_text="technical")
    expect(row).to_contain_text(f"v{body['version']}")
    page.select_option("#diff-agent", "technical")
    page.select_option("#diff-a", str(body["version"] - 1))
    page.select_option("#diff-b", str(body["version"]))
    page.click('#diff-form button[type="submit"]')
    expect(page.locator("#agent-diff span.add")).to_contain_text("Cite the article.")
    expect(page.locator("#agent-diff span.del")).not_to_contain_text("Cite the article.")
    assert page.locator("#agent-diff span.del").count() == 1
    # Long lines wrap: the change at the end of the instructions is in view.
    hidden = page.eval_on_selector("#agent-diff pre.diff", "p => p.scrollWidth - p.clientWidth")
    assert hidden <= 0, f"the diff hides {hidden} px to the right"
    shot(page, "agents")


@check
def operators_see_teams_switch_agents_off_and_issue_and_revoke_keys(browser):
    page = browser.page()
    sign_in(page, key=ADMIN_KEY)
    expect(page.locator("#key-kind")).to_have_text("admin key")
    # The admin key reaches only the operators' view.
    expect(page.locator('#nav a[data-route="operators"]')).to_be_visible()
    expect(page.locator('#nav a[data-route="runs"]')).to_be_hidden()
    card = page.locator("article.team", has_text="demo").first
    expect(card).to_be_visible()
    expect(card).to_contain_text("Slots:")
    expect(card).to_contain_text("used")
    # A kill switch with its reason, and back on.
    card.get_by_label("Agent", exact=True).fill("slow")
    card.get_by_label("Reason").last.fill("browser test")
    card.get_by_role("button", name="Disable agent").click()
    card = page.locator("article.team", has_text="demo").first
    expect(card.locator("ul.disabled-agents")).to_contain_text("browser test")
    status, refused = api("POST", "/v1/runs", {"agent": "slow", "input": "x"})
    assert status in (403, 409, 422), f"a disabled agent started: {status} {refused}"
    shot(page, "operators")
    card.get_by_role("button", name="Enable agent slow").click()
    expect(page.locator("article.team", has_text="demo").first.locator("ul.disabled-agents")).to_have_count(0)
    # A key, shown once, then revoked.
    card = page.locator("article.team", has_text="demo").first
    card.locator("details.keys-details summary").click()
    card.get_by_role("button", name="Issue key").click()
    secret = page.locator("#issued-key code.secret")
    expect(secret).to_be_visible()
    key = secret.text_content()
    shot(page, "operators-key-issued")
    status, _ = api("GET", "/v1/agents?limit=1", key=key)
    assert status == 200, f"the issued key does not work: {status}"
    # A tab signed in with it, to be turned away once it is revoked.
    team_tab = browser.page()
    sign_in(team_tab, key=key)
    # Keys are ar_<prefix>_<secret>; the list shows the prefix only.
    prefix = key.split("_")[1]
    assert prefix and key.split("_")[2], f"not a key: {key}"
    revoke = card.get_by_role("button", name=f"Revoke key {prefix}")
    expect(revoke).to_be_enabled()
    expect(card.locator(".keys")).not_to_contain_text(key.split("_")[2])
    revoke.click()
    expect(revoke).to_be_disabled()
    wait_for(page, "the key to be refused", lambda: api("GET", "/v1/agents?limit=1", key=key)[0] == 401)
    team_tab.reload()
    expect(team_tab.locator("#signin .alert")).to_contain_text("refused")
    assert key not in team_tab.evaluate("Object.values(sessionStorage)"), "the revoked key stayed"
    page.click("#issued-key button:has-text('Dismiss')")
    expect(page.locator("#issued-key code.secret")).to_have_count(0)


@check
def every_page_reads_at_375_px_and_every_control_is_labelled(browser):
    page = browser.page(width=375, height=812)
    sign_in(page)
    run = finished_run("technical")
    # Each page, and what shows it has been drawn.
    pages = {
        "runs": ("#/runs", "#runs-table tbody tr"),
        "run": (f"#/runs/{run['id']}", "#run-steps details.step"),
        "start": ("#/start", '#start-agent option[value="technical"]'),
        "usage": ("#/usage", "#statement-table tbody tr"),
        "agents": ("#/agents", "#agents-table tbody tr"),
    }
    for name, (route, drawn) in pages.items():
        page.goto(f"{BASE}/console/{route}")
        page.locator(drawn).first.wait_for(state="attached")
        if name == "usage":
            page.locator("#usage-chart").wait_for()
        if name == "run":
            expect(page.locator("#stream-state")).to_have_text("(ended)")
        audit(page, name)
        shot(page, f"{name}-375px")
    admin = browser.page(width=375, height=812)
    sign_in(admin, key=ADMIN_KEY)
    expect(admin.locator("article.team").first).to_be_visible()
    admin.locator("article.team details.keys-details summary").first.click()
    expect(admin.get_by_role("button", name="Issue key").first).to_be_visible()
    audit(admin, "operators")
    shot(admin, "operators-375px")


def audit(page, name):
    overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 0, f"{name}: {overflow} px wider than the screen"
    unlabelled = page.evaluate("""() => [...document.querySelectorAll('input, select, textarea, button, a[href]')]
        .filter(e => !e.closest('[hidden]') && e.getClientRects().length)
        .filter(e => {
            if (e.labels && e.labels.length) return false;
            if (e.getAttribute('aria-label') || e.getAttribute('aria-labelledby')) return false;
            return !(['BUTTON', 'A'].includes(e.tagName) && (e.textContent || '').trim());
        })
        .map(e => e.outerHTML.slice(0, 120))""")
    assert not unlabelled, f"{name}: controls without a label: {unlabelled}"
    inline = page.evaluate("""() => [...document.querySelectorAll('*')]
        .filter(e => e.hasAttribute('style') || [...e.attributes].some(a => a.name.startsWith('on')))
        .map(e => e.outerHTML.slice(0, 120))""")
    assert not inline, f"{name}: inline styles or handlers: {inline}"


@check
def the_console_works_by_keyboard(browser):
    page = browser.page()
    page.goto(f"{BASE}/console/")
    page.keyboard.type(KEY)
    page.keyboard.press("Enter")
    expect(page.locator("#runs-body")).to_be_visible()
    # Tab from the top reaches the skip link, then the navigation.
    page.reload()
    expect(page.locator("#runs-body")).to_be_visible()
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.className") == "skip"
    page.keyboard.press("Enter")
    assert page.url.endswith("#/runs"), f"the skip link changed the route: {page.url}"
    focused = page.evaluate("document.activeElement.id")
    assert focused == "main", f"the skip link moved focus to {focused!r}"
    page.keyboard.press("Tab")
    focused = page.evaluate("document.activeElement.id")
    assert focused == "filter-status", f"after the skip link, Tab went to {focused!r}"
    page.reload()
    expect(page.locator("#runs-body")).to_be_visible()
    for _ in range(4):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.getAttribute('href')") == "#/start":
            break
    else:
        raise AssertionError("Tab never reached the Start run link")
    page.keyboard.press("Enter")
    expect(page.locator("#start-agent")).to_be_focused()
    # Start a run with the keyboard alone.
    page.keyboard.press("Tab")
    page.keyboard.type("Login help, by keyboard.")
    page.keyboard.press("Tab")
    page.keyboard.press("Tab")
    page.keyboard.press("Enter")
    page.wait_for_url(re.compile(r"#/runs/[0-9a-f-]{36}$"))
    expect(page.locator("#run-status")).not_to_have_text("")


def main():
    os.makedirs(ARTIFACTS, exist_ok=True)
    only = sys.argv[1:]
    failures = 0
    ran = 0
    with sync_playwright() as playwright:
        browser = Browser(playwright)
        for fn in CHECKS:
            if only and not any(o in fn.__name__ for o in only):
                continue
            ran += 1
            started = time.monotonic()
            browser.pages = []
            try:
                fn(browser)
                problems = [p for page in browser.pages for p in page.problems]
                assert not problems, "; ".join(problems)
                print(f"browser {fn.__name__} ... ok ({time.monotonic() - started:.1f} s)", flush=True)
            except Exception:  # noqa: BLE001 - every failure is reported the same way
                failures += 1
                print(f"browser {fn.__name__} ... FAILED", flush=True)
                traceback.print_exc()
                for context in browser.browser.contexts:
                    for open_page in context.pages:
                        try:
                            shot(open_page, f"FAILED-{fn.__name__}")
                        except Exception:  # noqa: BLE001
                            pass
            finally:
                for context in list(browser.browser.contexts):
                    context.close()
        browser.browser.close()
    print(f"browser: {ran} checks, {failures} failures; screenshots in {ARTIFACTS}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
