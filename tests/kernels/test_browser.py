"""Chromium: in a real JupyterLab, pick the Everest kernel in the launcher, run a cell, see
its output — computed in the job's task (not as this test's account), through the relay."""

from __future__ import annotations

import re
import socket

import pytest
from playwright.sync_api import Browser, expect

from tests.kernels.conftest import running_jobs
from tests.session.helpers import wait_for

pytestmark = pytest.mark.timeout(600)


def test_pick_the_everest_kernel_in_the_launcher_and_run_a_cell(kernel_server, make_lab,
                                                                 browser: Browser) -> None:
    lab = make_lab(kernel_server)
    lab.install("--resource", "local", "--display-name", "Python on local (Everest)")
    lab.start()
    context = browser.new_context()
    page = context.new_page()
    try:
        page.goto(f"{lab.url}lab?token={lab.token}")
        card = page.locator('.jp-LauncherCard[data-category="Notebook"]',
                            has_text="Python on local (Everest)")
        card.click(timeout=90_000)
        expect(page.get_by_text("Python on local (Everest) | Idle")).to_be_visible(
            timeout=120_000)
        [job_id] = running_jobs(kernel_server)
        editor = page.locator(".jp-Notebook .jp-Cell .cm-content").first
        editor.click()
        code = "import os, socket; print(socket.gethostname(), os.getuid())"
        page.keyboard.type(code)
        expect(editor).to_have_text(code)
        page.keyboard.press("Shift+Enter")
        output = page.locator(".jp-OutputArea-output").first
        expect(output).to_have_text(re.compile(rf"^{re.escape(socket.gethostname())} \d+\s*$"),
                                    timeout=90_000)
        uid = int(output.inner_text().split()[-1])
        assert uid != 0, "the kernel runs as the job's task account, never as root"
    finally:
        context.close()
    lab.stop()  # a lab that stops cleanly shuts its kernels down: the job ends
    wait_for(lambda: job_id not in running_jobs(kernel_server), 60, "the kernel's job to end")
