"""`dagster dev` (webserver and daemon) on the project's definitions, and headless Chromium to drive its UI."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from playwright.sync_api import Error as PlaywrightError
from playwright.sync_api import Page, sync_playwright

from k2_pipelines.dev.broker import free_port
from k2_pipelines.settings import CHECKOUT

CHROMIUM = "/usr/bin/chromium"  # Debian's, which `make test` installs: Playwright's own browser cannot be downloaded
# without the background-networking flags Chromium keeps calling out, the closed network refuses, and it stalls
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
CHECKOUT_ARTIFACTS = CHECKOUT / ".k2" / "test-artifacts"  # what CI keeps of a run


def graphql(port: int, query: str, variables: dict | None = None) -> dict:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/graphql", data=json.dumps({"query": query, "variables": variables or {}}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.load(response)["data"]


def _answers(port: int) -> bool:
    try:
        return "repositoriesOrError" in graphql(port, "{ repositoriesOrError { __typename } }")
    except OSError:
        return False


@contextmanager
def dagster_dev(k2_home: Path) -> Iterator[int]:
    """`dagster dev` (webserver + daemon) with a fresh DAGSTER_HOME under `k2_home`; yields its port once it answers."""
    home = k2_home / "dagster"
    home.mkdir()
    # the project's instance settings, without the newsletter dialog a fresh instance lays over the UI
    shutil.copyfile(CHECKOUT / "dagster.yaml", home / "dagster.yaml")
    port = free_port()
    env = os.environ | {"DAGSTER_HOME": str(home)}
    process = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "dagster"),
            "dev",
            "-w",
            "workspace.yaml",
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
        ],
        cwd=CHECKOUT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 120
        while not _answers(port):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"dagster dev did not come up on port {port} (exit code {process.poll()})")
            time.sleep(1)
        yield port
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:  # a shell that ignores SIGTERM passes that on to its children
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)


@contextmanager
def chromium_page(base_url: str) -> Iterator[Page]:
    """A page of headless Chromium on `base_url`; relative URLs in `page.goto` resolve against it."""
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(base_url=base_url, viewport={"width": 1600, "height": 1000})
            page.set_default_timeout(30_000)  # a loaded two-core machine renders slowly
            yield page
        finally:
            browser.close()


class Screenshots:
    """One numbered screenshot per step in `folder`, copied to the checkout's .k2/test-artifacts/<name>/.

    Used as a context manager it also shoots the page as it was when a step failed.
    """

    def __init__(self, page: Page, folder: Path, name: str):
        self.page, self.folder, self.copies = page, folder, CHECKOUT_ARTIFACTS / name
        self.taken = 0
        shutil.rmtree(self.copies, ignore_errors=True)
        for path in (self.folder, self.copies):
            path.mkdir(parents=True, exist_ok=True)
        print(f"screenshots in {self.folder} and {self.copies}")

    def take(self, step: str, full_page: bool = False) -> Path:
        self.taken += 1
        path = self.folder / f"{self.taken:02d}-{step}.png"
        self.page.screenshot(path=path, full_page=full_page)
        shutil.copy2(path, self.copies / path.name)
        return path

    def __enter__(self) -> "Screenshots":
        return self

    def __exit__(self, kind, error, traceback) -> None:
        if error is not None:
            with suppress(PlaywrightError):  # the browser itself may be what failed: keep the test's own error
                self.take("failed", full_page=True)
