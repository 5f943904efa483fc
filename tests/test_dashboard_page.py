"""The dashboard's web page (issue 13): a real cluster with a dashboard, opened in headless
Chromium (Debian's /usr/bin/chromium, driven by Playwright), clicked through as a user would.

`make test` installs chromium (the Makefile's `unit` target); without it this module fails and
says so rather than skip, since CI must run it. ACTORHUB_WRITE_DOCS_SCREENSHOT=1 also writes
the screenshot to docs/dashboard.png (the README's).
"""

from __future__ import annotations

import os
import re
import struct
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from _drivers import REPO, run_driver
from _procs import end
from _wait import wait_for
from conftest import module_cluster

import actorhub
from actorhub.cluster.launcher import start_node
from actorhub.cluster.session import Session
from actorhub.config import Config
from actorhub.exceptions import ActorDiedError
from actorhub.job_submission import JobStatus, JobSubmissionClient
from actorhub.util.placement_group import placement_group

CHROMIUM = Path("/usr/bin/chromium")
# Known to work as root in a container; the network flags keep chromium from calling home
# (the network is closed, and each try would slow it).
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync",
]
WAIT_MS = 15_000
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@actorhub.remote
class Counter:
    def __init__(self) -> None:
        self.n = 0

    def incr(self) -> int:
        self.n += 1
        return self.n


@actorhub.remote(max_restarts=1)
class Phoenix:
    """Crashes once when asked, and is restarted."""

    def crash(self) -> None:
        os._exit(3)

    def ping(self) -> str:
        return "pong"


@actorhub.remote(max_restarts=0)
class Crasher:
    def crash(self) -> None:
        os._exit(7)


@actorhub.remote
def square(x: int) -> int:
    return x * x


class Scene:
    """The cluster the page shows, and what the test made in it."""

    def __init__(self, context: actorhub.ClusterContext) -> None:
        assert context.dashboard_url is not None
        self.context = context
        self.url = f"http://{context.dashboard_url}"
        self.token = (Path(context.session_dir) / "token").read_text().strip()
        self.counter = Counter.options(name="counter", namespace="shop").remote()
        assert actorhub.get(self.counter.incr.remote()) == 1
        self.phoenix = Phoenix.remote()
        with pytest.raises(ActorDiedError):
            actorhub.get(self.phoenix.crash.remote())
        assert actorhub.get(self.phoenix.ping.remote()) == "pong"  # restarted once
        crasher = Crasher.remote()
        with pytest.raises(ActorDiedError):
            actorhub.get(crasher.crash.remote())
        self.crasher_id = crasher.actor_id
        assert actorhub.get(square.remote(7)) == 49
        self.big = actorhub.put(b"x" * 300_000)
        self.group = placement_group([{"CPU": 0.5}], name="dash-group")
        actorhub.get(self.group.ready())
        with JobSubmissionClient(self.url) as jobs:
            self.job_id = jobs.submit_job(entrypoint="echo hello from the dashboard job; echo second line")
            deadline = time.monotonic() + 60
            while jobs.get_job_status(self.job_id) != JobStatus.SUCCEEDED:
                assert time.monotonic() < deadline, jobs.get_job_info(self.job_id)
                time.sleep(0.1)


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scene]:
    with module_cluster(tmp_path_factory.mktemp("dashboard-sessions"), num_cpus=2, include_dashboard=True) as context:
        yield Scene(context)


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[object]:
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: run `make test` (its set-up installs Debian's chromium), or "
                    "`apt-get install chromium` as root")
    from playwright.sync_api import sync_playwright

    # The profile's path names actorhub, so the leak check also sees a chromium left running.
    profile = tmp_path / "actorhub-dashboard-chromium"
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(profile), executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS,
            viewport={"width": 1360, "height": 860},
        )
        try:
            yield context
        finally:
            context.close()
    left = [pid for pid in map(int, filter(str.isdigit, os.listdir("/proc"))) if _cmdline_has(pid, str(profile))]
    assert not left, f"chromium processes left running: {left}"


def _cmdline_has(pid: int, text: str) -> bool:
    try:
        return text.encode() in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def test_page_files_are_public_and_the_state_needs_the_token(scene: Scene) -> None:
    auth = {"Authorization": f"Bearer {scene.token}"}
    page = httpx.get(f"{scene.url}/")
    assert page.status_code == 200 and "<script src=\"/static/app.js\"" in page.text
    assert httpx.get(f"{scene.url}/static/app.js").status_code == 200
    assert httpx.get(f"{scene.url}/static/style.css").headers["Content-Type"].startswith("text/css")
    assert httpx.get(f"{scene.url}/static/missing.js").status_code == 404
    refused = httpx.get(f"{scene.url}/api/v0/actors")
    assert refused.status_code == 401 and "token" in refused.json()["error"]
    assert httpx.get(f"{scene.url}/api/v0/actors", headers={"Authorization": "Bearer wrong"}).status_code == 401
    actors = httpx.get(f"{scene.url}/api/v0/actors", headers=auth).json()["result"]
    counter = next(a for a in actors if a["name"] == "counter")
    assert (counter["namespace"], counter["state"], counter["class_name"]) == ("shop", "ALIVE", "Counter")
    dead = next(a for a in actors if a["actor_id"] == scene.crasher_id)
    assert dead["state"] == "DEAD" and dead["death_cause"], dead
    assert next(a for a in actors if a["class_name"] == "Phoenix")["num_restarts"] == 1
    missing = httpx.get(f"{scene.url}/api/v0/actors/{'0' * 24}", headers=auth)
    assert missing.status_code == 404 and "no actor" in missing.json()["error"]
    assert httpx.get(f"{scene.url}/api/v0/nodes/nosuchnode", headers=auth).status_code == 404
    objects = httpx.get(f"{scene.url}/api/v0/objects", headers=auth).json()
    big = next(o for o in objects["result"] if o["object_id"] == scene.big.hex())
    assert big["size"] >= 300_000 and big["owner"] == "driver" and big["stored_on"] == [scene.context.node_id]


def test_a_driver_joining_the_cluster_prints_the_dashboard_url(scene: Scene) -> None:
    result = run_driver(f"import actorhub; actorhub.init(address={scene.context.address!r}); actorhub.shutdown()")
    assert f"View the dashboard at {scene.url}" in result.stderr, result.stderr


def test_the_page_shows_the_running_cluster(scene: Scene, browser: object) -> None:
    from playwright.sync_api import BrowserContext, Page, expect

    assert isinstance(browser, BrowserContext)
    page: Page = browser.new_page()
    script_errors: list[str] = []
    page.on("pageerror", lambda error: script_errors.append(str(error)))
    page.goto(f"{scene.url}/")

    # A wrong token is refused, with a message, and the form asks again.
    expect(page.locator("#login")).to_be_visible()
    page.fill("#token", "not-the-token")
    page.click("#login-submit")
    expect(page.locator("#login-error")).to_contain_text("refused the token", timeout=WAIT_MS)
    expect(page.locator("#login-error")).to_contain_text("not this cluster's token")
    expect(page.locator("#login")).to_be_visible()
    expect(page.locator("#tabs")).to_be_hidden()

    page.fill("#token", scene.token)
    page.click("#login-submit")
    expect(page.locator("#login")).to_be_hidden(timeout=WAIT_MS)
    page.evaluate("window.loadedOnce = true")  # gone if anything reloads the page

    # Nodes: the head, with its CPUs in use out of 2, then its own view.
    node_id = scene.context.node_id
    node_row = page.locator(f'table[data-table="nodes"] tr[data-id="{node_id}"]')
    expect(node_row).to_contain_text("(head)", timeout=WAIT_MS)
    expect(node_row).to_contain_text("alive")
    expect(node_row).to_contain_text("/ 2")
    expect(page.locator("#summary")).to_contain_text("Nodes: 1 alive")
    node_row.locator(f'a[href="#/nodes/{node_id}"]').click()
    expect(page.locator("main h2")).to_contain_text(node_id, timeout=WAIT_MS)
    expect(page.locator('table[data-table="node-resources"] tr[data-id="CPU"]')).to_be_visible()
    expect(page.locator('table[data-table="node-actors"]')).to_contain_text("counter")
    expect(page.locator('table[data-table="node-tasks"]')).to_contain_text("square", timeout=WAIT_MS)

    # Actors: state, namespace, name, restarts and death cause; then one actor's view.
    page.click('nav a[data-view="actors"]')
    actors = page.locator('table[data-table="actors"]')
    counter_row = actors.locator(f'tr[data-id="{scene.counter.actor_id}"]')
    expect(counter_row).to_contain_text("counter", timeout=WAIT_MS)
    expect(counter_row).to_contain_text("shop")
    expect(counter_row).to_contain_text("ALIVE")
    phoenix_row = actors.locator(f'tr[data-id="{scene.phoenix.actor_id}"]')
    expect(phoenix_row.locator("td").nth(7)).to_have_text("1")
    crasher_row = actors.locator(f'tr[data-id="{scene.crasher_id}"]')
    expect(crasher_row).to_contain_text("DEAD")
    expect(crasher_row.locator("td").nth(8)).not_to_have_text("-")
    expect(page.locator('table[data-table="system-actors"]')).to_contain_text("LeaseDesk")
    counter_row.locator("a").first.click()
    expect(page.locator("main h2")).to_contain_text('Actor Counter "counter"', timeout=WAIT_MS)
    expect(page.locator("main dl")).to_contain_text("shop")
    expect(page.locator("main dl")).to_contain_text("incr")

    # Tasks by state, objects with sizes and owners, the placement group.
    page.click('nav a[data-view="tasks"]')
    expect(page.locator('[data-count="FINISHED"] b')).not_to_have_text("0", timeout=WAIT_MS)
    expect(page.locator('table[data-table="tasks"]')).to_contain_text("square")
    page.click('nav a[data-view="objects"]')
    big_row = page.locator(f'table[data-table="objects"] tr[data-id="{scene.big.hex()}"]')
    expect(big_row).to_contain_text("293.0 KiB", timeout=WAIT_MS)
    expect(big_row).to_contain_text("driver")
    expect(page.locator("main p.error")).to_have_count(0)  # every owner and store answered
    groups_tab = page.locator('nav a[data-view="placement-groups"]')
    expect(groups_tab).to_be_visible()
    groups_tab.click()
    expect(page.locator('table[data-table="placement-groups"]')).to_contain_text("dash-group", timeout=WAIT_MS)
    expect(page.locator('table[data-table="placement-groups"]')).to_contain_text("CREATED")

    # Jobs: the list, then a job's view with its logs.
    page.click('nav a[data-view="jobs"]')
    job_row = page.locator(f'table[data-table="jobs"] tr[data-id="{scene.job_id}"]')
    expect(job_row).to_contain_text("SUCCEEDED", timeout=WAIT_MS)
    job_row.locator("a").click()
    expect(page.locator("#job-logs")).to_contain_text("hello from the dashboard job\nsecond line", timeout=WAIT_MS)
    expect(page.locator("main dl")).to_contain_text("SUCCEEDED")

    # An actor made after the page loaded appears by itself.
    page.click('nav a[data-view="actors"]')
    expect(counter_row).to_be_visible(timeout=WAIT_MS)
    late = Counter.options(name="made-later", namespace="shop").remote()
    actorhub.get(late.incr.remote())
    expect(actors.locator(f'tr[data-id="{late.actor_id}"]')).to_contain_text("made-later", timeout=WAIT_MS)
    assert page.evaluate("window.loadedOnce") is True, "the page was reloaded"

    shot = page.screenshot(full_page=True)
    assert shot.startswith(PNG_SIGNATURE)
    width, height = struct.unpack(">II", shot[16:24])  # IHDR, the first chunk
    assert shot[12:16] == b"IHDR" and width >= 1000 and height >= 400, (width, height)
    if os.environ.get("ACTORHUB_WRITE_DOCS_SCREENSHOT") == "1":
        (REPO / "docs").mkdir(exist_ok=True)
        (REPO / "docs" / "dashboard.png").write_bytes(shot)

    # The tab keeps the token: a reload asks for nothing.
    page.reload()
    expect(actors.locator(f'tr[data-id="{late.actor_id}"]')).to_be_visible(timeout=WAIT_MS)
    expect(page.locator("#login")).to_be_hidden()

    # Forgetting the token asks for it again.
    page.click("#logout")
    expect(page.locator("#login")).to_be_visible()
    assert re.search(r"actorhub\.dashboard\.token", page.evaluate("JSON.stringify(Object.keys(sessionStorage))")) \
        is None
    assert not script_errors, script_errors


def test_a_node_that_left_shows_dead_and_the_rest_still_answers(scene: Scene) -> None:
    """Runs last: the cluster has a dead node from here on."""
    auth = {"Authorization": f"Bearer {scene.token}"}

    def nodes() -> list[dict[str, object]]:
        answer = httpx.get(f"{scene.url}/api/v0/nodes", headers=auth, timeout=10)
        assert answer.status_code == 200, answer.text
        return list(answer.json()["result"])

    process = start_node(Config.load(num_cpus=1), Session(Path(scene.context.session_dir)), scene.context.address)
    try:
        wait_for(nodes, "the second node", pause=0.1, ok=lambda listed: sum(bool(n["alive"]) for n in listed) == 2)
        joined = next(n for n in nodes() if n["node_id"] != scene.context.node_id)
        assert not joined["is_head"] and joined["object_store"] is not None
        assert joined["resources_total"]["CPU"] == 1
    finally:
        end(process)
    wait_for(nodes, "its death", pause=0.1,
             ok=lambda listed: any(n["node_id"] == joined["node_id"] and not n["alive"] for n in listed))
    left = next(n for n in nodes() if n["node_id"] == joined["node_id"])
    assert left["object_store"] is None  # its store is not asked: nothing waits on a dead node
    summary = httpx.get(f"{scene.url}/api/v0/cluster", headers=auth).json()
    assert summary["nodes"] == {"alive": 1, "dead": 1}
    detail = httpx.get(f"{scene.url}/api/v0/nodes/{joined['node_id']}", headers=auth).json()
    assert detail["node"]["alive"] is False and detail["actors"] == []
    objects = httpx.get(f"{scene.url}/api/v0/objects", headers=auth).json()
    assert objects["unreachable"] == [] and any(o["object_id"] == scene.big.hex() for o in objects["result"])
