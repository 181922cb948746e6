//! The console does a user's tasks in a real browser (headless Chromium through chromedriver),
//! through the real binaries and Docker: create an app, deploy an image and watch its output
//! arrive, see it healthy, scale it to 2, set a secret config var (masked, then revealed), roll
//! back, read a line the app printed after the page opened, see a chart with points, back up
//! its database and see the backup verified, restore it to a new database; then a viewer sees
//! no controls, and a viewer's crafted post and a post without its CSRF value are refused.
//! Screenshots of each page go under `target/test-output/console/` and are listed.

use paas_tests::webdriver::Browser;
use paas_tests::{docker, wait_for, Platform};
use serde_json::json;
use std::path::PathBuf;

/// An image that answers HTTP on 8080 and prints each request line, from the local base image
/// alone (Perl is in Debian's base): no package download.
fn perl_image(tag: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let server = r#"$SIG{PIPE}="IGNORE"; $|=1; use IO::Socket::INET; my $s=IO::Socket::INET->new(LocalPort=>8080,Listen=>64,ReuseAddr=>1) or die "listen: $!"; print "listening on 8080\n"; while (my $c=$s->accept) { my $l=<$c>; next unless defined $l; while (my $h=<$c>) { last if $h =~ /^\r?\n$/ } $l =~ s/\r?\n//; print "got $l\n"; print $c "HTTP/1.1 200 OK\r\nContent-Length: 6\r\nConnection: close\r\n\r\nhello\n"; close $c; }"#;
    let dockerfile = format!(
        "FROM debian:bookworm-slim\nCMD [\"perl\", \"-e\", {}]\n",
        serde_json::to_string(server).unwrap()
    );
    std::fs::write(dir.path().join("Dockerfile"), dockerfile).unwrap();
    docker(&["build", "-q", "-t", tag, dir.path().to_str().unwrap()]);
    dir
}

/// The app's running web replicas.
fn web_replicas(p: &Platform, app: &str) -> usize {
    let filters = [
        format!("label=paas.node={}", p.node),
        format!("label=paas.app={app}"),
        "label=paas.process=web".into(),
    ];
    docker(&["ps", "-q", "--filter", &filters[0], "--filter", &filters[1], "--filter", &filters[2]])
        .split_whitespace()
        .count()
}

/// Where screenshots go: kept after the test, for a human (and CI's artifacts).
fn shots_dir() -> PathBuf {
    let dir = paas_tests::workspace_root().join("target/test-output/console");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn shot(b: &Browser, name: &str) {
    let png = b.screenshot();
    assert!(png.starts_with(b"\x89PNG") && png.len() > 5_000, "a rendered page: {} bytes", png.len());
    let path = shots_dir().join(format!("{name}.png"));
    std::fs::write(&path, png).unwrap();
    println!("screenshot: {}", path.display());
}

/// Reloads `url` until the element `css` has text containing `needle`.
fn reload_until(b: &Browser, url: &str, css: &str, needle: &str, secs: u64) -> String {
    // Without its fragment: navigating to the same URL with one would not load the page again.
    let url = url.split('#').next().unwrap_or(url);
    wait_for(secs, &format!("{css} to show {needle:?}"), || {
        b.goto(url);
        let text = b.find(css).map(|e| e.text()).unwrap_or_default();
        text.contains(needle).then_some(text)
    })
}

/// Posts a form from the page with a synchronous request; (status, final URL's page text).
fn post(b: &Browser, url: &str, body: &str) -> (u64, String) {
    let v = b.execute(
        "var x = new XMLHttpRequest(); x.open('POST', arguments[0], false); \
         x.setRequestHeader('Content-Type', 'application/x-www-form-urlencoded'); x.send(arguments[1]); \
         return [x.status, x.responseText];",
        json!([url, body]),
    );
    (v[0].as_u64().unwrap_or(0), v[1].as_str().unwrap_or_default().to_string())
}

/// Clicks `css` (a form's button) and waits for the page the post leads to.
fn submit(b: &Browser, css: &str) {
    b.execute("document.body.dataset.stale = '1';", json!([]));
    b.wait_for(css).click();
    b.wait_for("body:not([data-stale])");
}

/// The flash message of the page a post led to.
fn submit_flash(b: &Browser, css: &str) -> String {
    submit(b, css);
    b.wait_for("#flash").text()
}

fn sign_in(b: &Browser, base: &str, user: &str, password: &str) {
    b.goto(&format!("{base}/login"));
    b.wait_for("#user").send_keys(user);
    b.wait_for("#password").send_keys(password);
    b.wait_for("form[action='/login'] button[type=submit]").click();
    b.wait_for("#who");
}

#[test]
fn a_user_runs_an_app_from_the_console_and_a_viewer_cannot_change_it() {
    let b = Browser::start();
    let mut p = Platform::start();
    let app = p.app_name("cons");
    let image = format!("paas-console-test-{app}:1");
    let source = perl_image(&image);
    let base = p.api_url.clone();
    let token = p.token();

    // Sign in with the CLI's token; the dashboard.
    b.goto(&format!("{base}/login"));
    b.wait_for("#token").send_keys(&token);
    b.wait_for("form[action='/login'] button[type=submit]").click();
    b.wait_for("#create-app");
    shot(&b, "dashboard-empty");

    // Create the app from the dashboard: its page opens.
    b.wait_for("#new-app").send_keys(&app);
    b.wait_for("#create-app button").click();
    let page = format!("{base}/apps/{app}/production");
    b.wait_for_url(&page);
    assert!(b.wait_for("#flash").text().contains(&format!("Created app {app}")));

    // Deploy the image: the release page shows the output as it arrives, then live.
    b.wait_for("#image").send_keys(&image);
    b.wait_for("#deploy-form button").click();
    b.wait_for_url(&format!("{page}/releases/1"));
    wait_for(120, "the deploy to end live", || {
        let status = b.wait_for("#deploy-status").text();
        assert_ne!(status, "failed", "{}", b.page_source());
        (status == "active").then_some(())
    });
    let output = b.wait_for("#deploy-output").text();
    assert!(output.lines().count() >= 2, "the deploy's output streamed in: {output:?}");
    shot(&b, "release");

    // Healthy; scale to 2.
    reload_until(&b, &page, "#env-health", "1/1 healthy", 60);
    let scale = b.wait_for("#scale-web");
    scale.clear();
    scale.send_keys("2");
    submit(&b, "form.scale button");
    assert!(b.wait_for("#flash").text().contains("Scaled web to 2"), "{}", b.page_source());
    reload_until(&b, &page, "#env-health", "2/2 healthy", 90);
    wait_for(60, "two web replicas", || (web_replicas(&p, &app) == 2).then_some(()));

    // A secret config var: masked in the list, shown on reveal. It makes release 2.
    b.wait_for("#config-key").send_keys("API_KEY");
    b.wait_for("#config-value").send_keys("s3cr3t-value-42");
    b.wait_for("#config-form input[name=secret]").click();
    submit(&b, "#config-form button");
    assert!(b.wait_for("#flash").text().contains("Set API_KEY"));
    let masked = b.wait_for("#config-vars tr[data-key=API_KEY]").text();
    assert!(!masked.contains("s3cr3t"), "masked: {masked:?}");
    submit(&b, "#reveal");
    let shown = b.wait_for("#config-vars tr[data-key=API_KEY]").text();
    assert!(shown.contains("s3cr3t-value-42"), "revealed: {shown:?}");
    shot(&b, "config-revealed");
    reload_until(&b, &page, "#release-list tr[data-version='2']", "active", 120);

    // Roll back to v1 from its row: release 3 goes live with v1's settings.
    b.wait_for("#release-list tr[data-version='1'] button.rollback").click();
    b.wait_for_url(&format!("{page}/releases/3"));
    wait_for(120, "the rollback to go live", || {
        (b.wait_for("#deploy-status").text() == "active").then_some(())
    });
    b.goto(&page);
    let v3 = b.wait_for("#release-list tr[data-version='3']").text();
    assert!(v3.contains("active") && !v3.contains("API_KEY"), "v3 runs v1's settings: {v3:?}");

    // The log: a line the app prints after the page opened arrives by itself.
    b.goto(&format!("{page}#logs"));
    b.wait_for("#log-lines");
    let marker = format!("/console-marker-{}", paas_tests::rand_suffix());
    let host = p.host(&app);
    wait_for(60, "the app to answer", || (p.get(&host, &marker).status == 200).then_some(()));
    wait_for(30, "the app's line in the followed log", || {
        let text = b.wait_for("#log-lines").text();
        text.lines().any(|l| l.contains("app[web.") && l.contains(&format!("got GET {marker}"))).then_some(())
    });
    shot(&b, "app-logs");

    // Metrics: the request-rate chart has points once the ingress reported them.
    for _ in 0..20 {
        assert_eq!(p.get(&host, "/").status, 200);
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(90);
    wait_for(90, "a request-rate chart with points", || {
        if std::time::Instant::now() + std::time::Duration::from_secs(2) > deadline {
            let text = p.paas(&["metrics", "--app", &app, "-o", "json"]).stdout;
            panic!("no request rate in the chart; paas metrics says: {text}\n{}", b.page_source());
        }
        b.goto(&format!("{page}?range=1h"));
        let chart = b.wait_for("figure[data-metric=http_requests_per_second]");
        let max = b.execute(
            "return document.querySelector('figure[data-metric=http_requests_per_second]').dataset.max;",
            json!([]),
        );
        let max: f64 = max.as_str().unwrap_or("0").parse().unwrap_or(0.0);
        (max > 0.0 && chart.text().contains("Requests per second")).then_some(())
    });
    shot(&b, "app-metrics");

    // The database: back up now, see it verified, restore it into a new database.
    p.paas(&["db", "create", "--app", &app, "--replicas", "0"]).expect_ok();
    p.wait_db_healthy(&app);
    b.goto(&page);
    submit(&b, "#backup-now button");
    assert!(b.wait_for("#flash").text().contains("Backup"), "{}", b.page_source());
    let backup = b.wait_for("#backups tr[data-backup]");
    let id =
        b.execute("return document.querySelector('#backups tr[data-backup]').dataset.backup;", json!([]));
    let id = id.as_str().unwrap().to_string();
    drop(backup);
    let row = format!("#backups tr[data-backup='{id}'] .verification");
    reload_until(&b, &page, &row, "ok", 180);
    b.wait_for(&format!("#backups tr[data-backup='{id}'] .restore-new button")).click();
    let task_page =
        wait_for(30, "the restore's page", || Some(b.current_url()).filter(|u| u.contains("task=")));
    reload_until(&b, &task_page, "#db-task-status", "done", 180);
    assert!(b.wait_for("#db-task").text().contains("into"), "{}", b.page_source());
    shot(&b, "database");

    // Backup settings and a custom domain (its certificate from the local CA), from the page.
    b.goto(&page);
    let schedule = b.wait_for("#db-schedule");
    schedule.clear();
    schedule.send_keys("0 4 * * *");
    let keep = b.wait_for("#db-keep");
    keep.clear();
    keep.send_keys("5");
    let flash = submit_flash(&b, "#db-settings button");
    assert!(flash.contains("0 4 * * *") && flash.contains("keep 5"), "{flash:?}");
    let domain = format!("{app}.example.test");
    b.wait_for("#domain-name").send_keys(&domain);
    submit(&b, "#domain-form button");
    assert!(b.wait_for("#flash").text().contains(&format!("Added {domain}")), "{}", b.page_source());
    b.wait_for(&format!("#domain-list tr[data-domain='{domain}']"));

    // Source from an uploaded archive: built on the node, its output streamed, then live.
    let out = tempfile::tempdir().unwrap();
    let archive = out.path().join("app.tar.gz");
    let tar = std::process::Command::new("tar")
        .args(["czf", archive.to_str().unwrap(), "-C", source.path().to_str().unwrap(), "."])
        .status()
        .unwrap();
    assert!(tar.success());
    let releases = |p: &Platform| p.paas(&["releases", "--app", &app, "-o", "json"]).expect_ok().json();
    let before = releases(&p).as_array().map_or(0, Vec::len);
    for _ in 0..3 {
        b.goto(&page);
        b.wait_for("#archive").send_keys(archive.to_str().unwrap());
        submit(&b, "#upload-form button");
        if !b.network_changed() {
            break;
        }
        // Chromium cut the post when the host's network changed (other tests' Docker networks):
        // open the release if the upload reached the platform, else upload again.
        let now = releases(&p);
        if now.as_array().map_or(0, Vec::len) > before {
            let newest = now.as_array().unwrap().iter().filter_map(|r| r["version"].as_u64()).max().unwrap();
            b.goto(&format!("{page}/releases/{newest}"));
            break;
        }
    }
    assert!(b.current_url().contains("/releases/"), "{}", b.page_source());
    wait_for(180, "the uploaded source to build and go live", || {
        let status = b.wait_for("#deploy-status").text();
        assert_ne!(status, "failed", "{}", b.page_source());
        (status == "active").then_some(())
    });
    let output = b.wait_for("#deploy-output").text();
    assert!(output.to_lowercase().contains("build") || output.contains("Step"), "build output: {output}");

    // The dashboard names who deployed the serving release and how long it took.
    b.goto(&format!("{base}/"));
    let row = b.wait_for(&format!("#apps tr[data-app=\"{app}\"] .last-deploy")).text();
    assert!(row.contains("by admin") && row.contains("took"), "{row:?}");
    let node = b.wait_for(&format!("#nodes tr[data-node=\"{}\"]", p.node)).text();
    assert!(node.matches('%').count() >= 3, "CPU, memory and disk of the node: {node:?}");

    // A viewer: added in settings, signed in, sees everything and no control.
    let viewer = format!("viewer-{}", paas_tests::rand_suffix());
    b.goto(&format!("{base}/settings"));
    b.wait_for("#user-name").send_keys(&viewer);
    b.wait_for("#user-password").send_keys("correct horse battery");
    b.wait_for("#user-app").send_keys(&app);
    submit(&b, "#user-form button");
    assert!(b.wait_for("#flash").text().contains("as viewer of"), "{}", b.page_source());
    shot(&b, "settings");
    b.wait_for("form[action='/logout'] button").click();
    b.wait_for("#token");
    sign_in(&b, &base, &viewer, "correct horse battery");
    b.goto(&page);
    b.wait_for("#release-list");
    let html = b.page_source();
    let scale = format!("action=\"/apps/{app}/production/scale\"");
    for control in [
        "deploy-form",
        "class=\"rollback\"",
        &scale,
        "config-form",
        "backup-now",
        "id=\"reveal\"",
        "restore-new",
    ] {
        assert!(!html.contains(control), "a viewer sees no {control}");
    }
    assert!(
        html.contains("API_KEY") || html.contains("GREETING") || html.contains("Config"),
        "reads the page"
    );
    shot(&b, "viewer");

    // A crafted scale post with the viewer's own CSRF value: the API refuses it, nothing changes.
    let csrf = b.execute("return document.querySelector('input[name=csrf]').value;", json!([]));
    let csrf = csrf.as_str().unwrap().to_string();
    let (status, text) =
        post(&b, &format!("/apps/{app}/production/scale"), &format!("csrf={csrf}&process=web&replicas=0"));
    assert_eq!(status, 200, "back to the page with the refusal");
    assert!(text.contains("class=\"error\"") && text.contains("viewer"), "the refusal shows: {text}");
    // (The upload's rollout may still be retiring an old replica: two is where it settles.)
    wait_for(60, "two web replicas after a viewer's post (it scaled nothing)", || {
        (web_replicas(&p, &app) == 2).then_some(())
    });
    // A post without the form's CSRF value never reaches the API.
    let (status, text) = post(&b, &format!("/apps/{app}/production/scale"), "process=web&replicas=0");
    assert_eq!(status, 403, "{text}");
    assert!(text.contains("did not come from this console"), "{text}");

    // At a phone's width the page still lays out (and screenshots).
    b.set_window_size(360, 800);
    b.goto(&page);
    b.wait_for("#release-list");
    shot(&b, "phone");
    let overflow = b.execute("return document.documentElement.scrollWidth - window.innerWidth;", json!([]));
    assert!(overflow.as_i64().unwrap_or(0) <= 0, "no sideways scrolling at 360 px: {overflow}");
    let _ = docker(&["rmi", "-f", &image]);
}
