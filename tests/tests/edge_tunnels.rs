//! Upgraded connections (WebSockets) through the HTTPS ingress stay open while the platform
//! changes around them: a deploy of another app and a reload of the ingress's certificates.
//! The client is Python's ssl module (from Debian), driven line by line over pipes.

use paas_tests::Platform;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

/// Connects over TLS (trusting the platform's CA, SNI `host`), asks `/echo` to switch
/// protocols, prints the status line, then for each line on stdin sends it and prints what
/// comes back.
const CLIENT: &str = r#"
import socket, ssl, sys
host, port, ca = sys.argv[1], int(sys.argv[2]), sys.argv[3]
ctx = ssl.create_default_context(cafile=ca)
ctx.set_alpn_protocols(["http/1.1"])
s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=20), server_hostname=host)
s.sendall(f"GET /echo HTTP/1.1\r\nHost: {host}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n".encode())
head = b""
while b"\r\n\r\n" not in head:
    chunk = s.recv(1)
    if not chunk:
        break
    head += chunk
print(head.split(b"\r\n")[0].decode(), flush=True)
for line in sys.stdin:
    s.sendall(line.encode())
    got = b""
    while not got.endswith(b"\n"):
        chunk = s.recv(4096)
        if not chunk:
            print("closed", flush=True)
            sys.exit(1)
        got += chunk
    print(got.decode().strip(), flush=True)
"#;

struct Tunnel {
    child: Child,
    input: ChildStdin,
    output: BufReader<ChildStdout>,
}

impl Tunnel {
    fn open(p: &Platform, host: &str) -> (Self, String) {
        let port = p.https.rsplit_once(':').unwrap().1;
        let mut child = Command::new("python3")
            .args(["-c", CLIENT, host, port])
            .arg(&p.ca_file)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 runs");
        let input = child.stdin.take().unwrap();
        let mut output = BufReader::new(child.stdout.take().unwrap());
        let mut status = String::new();
        output.read_line(&mut status).unwrap();
        (Self { child, input, output }, status.trim().to_string())
    }

    /// Sends `text` and answers what came back.
    fn echo(&mut self, text: &str) -> String {
        writeln!(self.input, "{text}").unwrap();
        self.input.flush().unwrap();
        let mut line = String::new();
        self.output.read_line(&mut line).unwrap();
        line.trim().to_string()
    }
}

impl Drop for Tunnel {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn a_websocket_over_https_stays_open_across_another_apps_deploy_and_a_certificate_reload() {
    let mut p = Platform::start();
    let (app, other) = (p.app_name("tunnel"), p.app_name("other"));
    let src = paas_tests::example_copy("hello");
    let dir = src.path().to_str().unwrap();
    for a in [&app, &other] {
        p.paas(&["apps", "create", a]).expect_ok();
    }
    p.paas(&["deploy", dir, "--app", &app]).expect_ok();
    let host = p.host(&app);

    let (mut tunnel, status) = Tunnel::open(&p, &host);
    assert_eq!(status, "HTTP/1.1 101 Switching Protocols");
    assert_eq!(tunnel.echo("one"), "one");

    // Another app is deployed: the ingress's routes change; the tunnel is not touched.
    p.paas(&["deploy", dir, "--app", &other]).expect_ok();
    assert_eq!(tunnel.echo("two"), "two");

    // A new domain: the ingress loads a new set of certificates. Once it serves the domain,
    // the set in use changed under the open tunnel.
    let domain = format!("www.{other}.test");
    p.paas(&["domains", "add", "--app", &other, &domain]).expect_ok();
    let port = p.https.rsplit_once(':').unwrap().1;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = Command::new("curl")
            .args(["-sS", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "5", "--cacert"])
            .arg(&p.ca_file)
            .args(["--resolve", &format!("{domain}:{port}:127.0.0.1"), &format!("https://{domain}:{port}/")])
            .output()
            .unwrap();
        if String::from_utf8_lossy(&out.stdout) == "200" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the new domain is not served: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(tunnel.echo("three"), "three");
    // And a new tunnel works beside it.
    let (mut second, status) = Tunnel::open(&p, &host);
    assert_eq!(status, "HTTP/1.1 101 Switching Protocols");
    assert_eq!(second.echo("four"), "four");
    assert_eq!(tunnel.echo("five"), "five");
}
