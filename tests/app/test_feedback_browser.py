"""The "Wrong? The right answer is ..." form in a real browser, with and without JavaScript,
against a real gunicorn with FEEDBACK_DIR set."""
from __future__ import annotations

import re

import pytest
from PIL import Image

from harness.browser import CHROMIUM, SKIP_REASON, page_opener
from harness.images import encode, photo
from harness.servers import GunicornServer

pytestmark = [pytest.mark.browser, pytest.mark.e2e, pytest.mark.slow,
              pytest.mark.skipif(CHROMIUM is None, reason=SKIP_REASON)]


@pytest.fixture(scope="module")
def feedback_server(notebook_export, tmp_path_factory):
    folder = tmp_path_factory.mktemp("feedback-e2e")
    server = GunicornServer(notebook_export, env={"FEEDBACK_DIR": str(folder)}).start()
    server.feedback_dir = folder
    yield server
    server.stop()


@pytest.fixture
def open_page(playwright, feedback_server):
    with page_opener(playwright, feedback_server.url, 30_000) as open_:
        yield open_


@pytest.mark.parametrize("javascript", [True, False], ids=["js", "no-js"])
def test_correction_from_the_result_page(open_page, feedback_server, tmp_path, javascript):
    label = "green" if javascript else "blue"
    data = encode(photo(seed=21), "PNG")
    (tmp_path / "mine.png").write_bytes(data)
    page = open_page(javascript)
    page.get_by_label(re.compile("Choose a photo")).set_input_files(str(tmp_path / "mine.png"))
    page.get_by_role("button", name="Classify", exact=True).click()
    page.locator("#result").wait_for(state="visible")
    page.get_by_label("Wrong? The right answer is").select_option(label)
    page.get_by_role("button", name="Send correction").click()
    if javascript:  # stays on the page and says so
        page.get_by_text(f"Thank you: saved as {label}.").wait_for()
    else:  # back to the form with a notice
        page.get_by_text("Thank you: the correction was saved.").wait_for()
    stored = list((feedback_server.feedback_dir / label).iterdir())
    assert len(stored) == 1
    with Image.open(stored[0]) as im:  # the pixels re-encoded, nothing else (feedback_store)
        assert (im.format, im.size, dict(im.getexif())) == ("JPEG", photo(seed=21).size, {})
