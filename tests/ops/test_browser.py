"""A real browser (Debian's headless chromium, driven by Selenium through Debian's
chromedriver) promotes a model version in the admin dashboard, and the
recommendations API then serves with it.

Skipped only where chromium is not installed and this is not CI; ``.ci/run``
installs it, so in CI a missing browser is a failure, not a skip.
"""

import json
import os
import shutil
import urllib.request

import pytest
from rest_framework.authtoken.models import Token

from registry.models import MLModel
from tests.accounts.factories import UserFactory
from tests.recommender.serving_fixtures import open_members, register_copy

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
HAVE_BROWSER = all(shutil.which(path) for path in (CHROMIUM, CHROMEDRIVER))

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.skipif(
        not HAVE_BROWSER and not os.environ.get("CI"),
        reason="needs Debian's chromium and chromium-driver (apt-get install)",
    ),
]

ADMIN_PASSWORD = "browser-test-pw-9!"


@pytest.fixture
def browser():
    # Selenium must use the system browser and driver, never download its own.
    os.environ["SE_OFFLINE"] = "true"
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in (
        "--headless=new",
        "--no-sandbox",  # CI runs as root
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1400,1000",
    ):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


def recommendations(base_url: str, token: str) -> tuple[dict, dict]:
    request = urllib.request.Request(
        f"{base_url}/api/v1/recommendations/?limit=5",
        headers={"Authorization": f"Token {token}", "X-Request-ID": "browser-e2e"},
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        return dict(response.headers), json.loads(response.read())


def test_promoting_in_the_admin_dashboard_changes_what_the_api_serves(
    live_server, browser, engine, trained
):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    candidate = register_copy(trained.ranking)  # an inactive newer version
    admin = UserFactory(username="ops-admin", is_staff=True, is_superuser=True)
    admin.set_password(ADMIN_PASSWORD)
    admin.save()
    token = Token.objects.create(user=open_members(1)[0]).key
    old, new = trained.ranking.version, candidate.version

    headers, body = recommendations(live_server.url, token)
    assert f"ranking={old}" in headers["X-Model-Versions"]
    assert body["model_versions"]["ranking"] == old

    wait = WebDriverWait(browser, 30)
    browser.get(f"{live_server.url}/admin/login/?next=/admin/")
    browser.find_element(By.NAME, "username").send_keys("ops-admin")
    browser.find_element(By.NAME, "password").send_keys(ADMIN_PASSWORD)
    browser.find_element(By.CSS_SELECTOR, "input[type=submit]").click()
    # From the admin index, follow the link to the dashboard.
    wait.until(ec.element_to_be_clickable((By.LINK_TEXT, "Model registry dashboard")))
    browser.find_element(By.LINK_TEXT, "Model registry dashboard").click()
    active = wait.until(ec.presence_of_element_located((By.ID, "active-ranking")))
    assert active.text == f"v{old}"
    assert browser.find_elements(By.CSS_SELECTOR, "figure.registry-chart svg")

    browser.find_element(By.ID, f"promote-ranking-{new}").click()

    wait.until(ec.text_to_be_present_in_element((By.ID, "active-ranking"), f"v{new}"))
    messages = browser.find_element(By.CSS_SELECTOR, "ul.messagelist").text
    assert f"Promoted ranking: v{old} → v{new}." in messages
    assert MLModel.objects.get(kind="ranking", is_active=True).pk == candidate.pk

    headers, body = recommendations(live_server.url, token)
    assert headers["X-Request-ID"] == body["request_id"] == "browser-e2e"
    assert f"ranking={new}" in headers["X-Model-Versions"]
    assert body["model_versions"]["ranking"] == new
    assert body["model_versions"]["embedding"] == trained.embedding.version
    assert body["strategy"] == "full"
