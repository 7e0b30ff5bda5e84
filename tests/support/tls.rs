//! A local TLS server on 127.0.0.1 (`openssl s_server -www`), killed on Drop.

use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub struct TlsServer {
    child: Child,
    pub port: u16,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

impl TlsServer {
    /// Serves `cert`/`key` on a free port of 127.0.0.1; returns once the port accepts.
    pub fn start(cert: &Path, key: &Path) -> Self {
        Self::start_on("127.0.0.1", cert, key)
    }

    /// [`TlsServer::start`] on `host` (an address of this network namespace, e.g. a node's IP).
    pub fn start_on(host: &str, cert: &Path, key: &Path) -> Self {
        let port = free_port();
        super::tools::require(&["openssl"]);
        let child = Command::new("openssl")
            .arg("s_server")
            .args(["-accept", &format!("{host}:{port}")])
            .arg("-cert")
            .arg(cert)
            .arg("-key")
            .arg(key)
            .args(["-www", "-quiet"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn openssl s_server");
        let mut server = Self { child, port };
        super::eventually_blocking(
            &format!("openssl s_server accepts on port {port}"),
            Duration::from_secs(10),
            || {
                if let Some(status) = server.child.try_wait().unwrap() {
                    panic!("openssl s_server exited early ({status})");
                }
                TcpStream::connect((host, port)).is_ok()
            },
        );
        server
    }

    pub fn url(&self) -> String {
        format!("https://localhost:{}/", self.port)
    }
}

impl Drop for TlsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
