//! Small client programs the TLS tests compile and run.

use std::path::{Path, PathBuf};
use std::process::Command;

/// `java Fetch.java URL`: an HTTPS GET through the JVM's default trust, exit 0 on HTTP 200.
pub const FETCH_JAVA: &str = r#"
import java.net.URL;
import javax.net.ssl.HttpsURLConnection;

public class Fetch {
    public static void main(String[] args) throws Exception {
        HttpsURLConnection c = (HttpsURLConnection) new URL(args[0]).openConnection();
        c.setConnectTimeout(30000);
        c.setReadTimeout(30000);
        int code = c.getResponseCode();
        System.out.println("HTTP " + code);
        System.exit(code == 200 ? 0 : 1);
    }
}
"#;

/// `fetch URL`: Go's HTTPS client with the system roots (what Go programs such as the AWS SDK
/// use); prints `HTTP <code>`, or the error on stderr, and exits 0 only on HTTP 200.
pub const FETCH_GO: &str = r#"
package main

import (
	"fmt"
	"net/http"
	"os"
	"time"
)

func main() {
	client := &http.Client{Timeout: 30 * time.Second}
	resp, err := client.Get(os.Args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	resp.Body.Close()
	fmt.Println("HTTP", resp.StatusCode)
	if resp.StatusCode != 200 {
		os.Exit(1)
	}
}
"#;

/// Builds [`FETCH_GO`] into `dir/fetch`, static (no cgo) so it also runs inside any image.
/// Go's build cache lives in the target dir so a warm machine links it in a second.
pub fn build_fetch_go(dir: &Path) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let source = dir.join("fetch.go");
    std::fs::write(&source, FETCH_GO).unwrap();
    let binary = dir.join("fetch");
    let tmp = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    // Found on the test's PATH: Go often lives outside the clean PATH given to the build.
    let (ok, stdout, stderr) = super::fsutil::run(
        Command::new(super::tools::which("go"))
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .env("HOME", &tmp)
            .env("GOCACHE", tmp.join("go-build"))
            .env("GOPATH", tmp.join("gopath"))
            .env("GOTOOLCHAIN", "local")
            .env("CGO_ENABLED", "0")
            .current_dir(dir)
            .args(["build", "-trimpath", "-o"])
            .arg(&binary)
            .arg(&source),
    );
    assert!(ok, "go build fetch.go failed\n{stdout}{stderr}");
    binary
}
