//! The web console in a real browser (headless Chromium through chromedriver): the sign-in
//! redirect, a wrong token's error, the apps table after signing in with the CLI's token (into a
//! session of its own), a screenshot of it, and signing out.

use paas_tests::webdriver::Browser;
use paas_tests::Platform;

#[test]
fn console_signs_in_lists_apps_and_signs_out() {
    // The browser first: when Chromium is missing the test fails at once with how to fix it.
    let b = Browser::start();
    let mut p = Platform::start();
    let app = p.app_name("web");
    p.paas(&["apps", "create", &app]).expect_ok();
    let token = p.token();
    let root = format!("{}/", p.api_url);
    let login = format!("{}/login", p.api_url);

    // Signed out, the console sends the browser to the sign-in form.
    b.goto(&root);
    b.wait_for_url(&login);
    b.wait_for("#token");

    // A wrong token: the form comes back with the API's reason and no cookie is set.
    b.wait_for("#token").send_keys("paas_wrong");
    b.wait_for("form[action='/login'] button[type=submit]").click();
    let error = b.wait_for("#login-error").text();
    assert!(error.contains("not valid"), "the sign-in error says why: {error:?}");
    assert_eq!(b.cookie("paas_session"), None, "a wrong token must not start a session");

    // The CLI's token: the apps page, with the new app's production environment, idle.
    b.wait_for("#token").send_keys(&token);
    b.wait_for("form[action='/login'] button[type=submit]").click();
    b.wait_for("#apps");
    b.wait_for_url(&root);
    assert_eq!(b.title(), "Dashboard · paas");
    let row = b.wait_for(&format!("#apps tr[data-app=\"{app}\"]")).text();
    for needle in ["production", "idle", &format!("{app}.localhost")] {
        assert!(row.contains(needle), "the row of {app} shows {needle:?}: {row:?}");
    }
    let session = b.cookie("paas_session").expect("a session cookie");
    assert!(
        session.starts_with("paas_session_") && session != token,
        "the cookie is a session id, not the token"
    );

    let png = b.screenshot();
    let shot = p.dir.path().join("console.png");
    std::fs::write(&shot, &png).unwrap();
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "the screenshot is a PNG");
    assert!(png.len() > 5_000, "a screenshot of a rendered page, not a blank one: {} bytes", png.len());
    // For a human to look at the page: PAAS_TEST_SCREENSHOT=/tmp/console.png cargo test ...
    if let Some(keep) = std::env::var_os("PAAS_TEST_SCREENSHOT") {
        std::fs::copy(&shot, keep).expect("copying the screenshot");
    }

    // Signing out clears the cookie: the console asks to sign in again.
    let sign_out = b.wait_for("form[action='/logout'] button");
    assert_eq!(sign_out.text(), "Sign out");
    sign_out.click();
    b.wait_for_url(&login);
    b.wait_for("#token");
    assert_eq!(b.cookie("paas_session"), None, "signing out removes the session cookie");
    b.goto(&root);
    b.wait_for_url(&login);
    b.wait_for("#token");
}
