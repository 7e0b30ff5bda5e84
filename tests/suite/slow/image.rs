//! The container image, built by `deploy/image/build` without a Docker engine: an OCI archive
//! (also a docker-save archive) of one static binary on an empty base, which runs in an empty
//! root, loads into a real containerd and runs there, and has the same digest when built again.
//!
//! The file makes one release build: the first test to need the image builds it, the others
//! use it, and the second build (the digest check) reuses its cargo cache, so that check is
//! about the assembly. That the binary itself does not depend on where the checkout lives was
//! checked by hand with two clones at different paths (README, "The image").

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

use crate::support;
use crate::support::certs::TestCa;
use crate::support::containerd::Containerd;
use crate::support::output::{assert_success, text};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const VERSION: &str = env!("CARGO_PKG_VERSION");
const REPOSITORY: &str = env!("CARGO_PKG_REPOSITORY");
const IMAGE_NAME: &str = "ghcr.io/trustmount/trustmount";

fn program(name: &str) -> Command {
    let mut command = Command::new(support::tools::which(name));
    command.stdin(Stdio::null());
    command
}

fn output(what: &str, command: &mut Command) -> Output {
    let out = command.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert_success(what, &out);
    out
}

fn json(bytes: &[u8]) -> serde_json::Value {
    serde_json::from_slice(bytes).unwrap_or_else(|e| panic!("not JSON ({e}): {}", text(bytes)))
}

/// One run of `deploy/image/build` into its own directory, and the archive unpacked.
struct Built {
    archive: PathBuf,
    digest: String,
    /// The archive's files: an OCI layout.
    layout: PathBuf,
}

impl Built {
    fn blob(&self, digest: &str) -> Vec<u8> {
        let hex = digest.strip_prefix("sha256:").unwrap_or_else(|| panic!("not a sha256 digest: {digest}"));
        std::fs::read(self.layout.join("blobs/sha256").join(hex)).unwrap_or_else(|e| panic!("blob {digest}: {e}"))
    }

    fn manifest(&self) -> serde_json::Value {
        json(&self.blob(&self.digest))
    }

    fn config(&self) -> serde_json::Value {
        json(&self.blob(self.manifest()["config"]["digest"].as_str().expect("config digest")))
    }

    /// The one layer, decompressed.
    fn layer_tar(&self) -> PathBuf {
        let layers = self.manifest()["layers"].as_array().expect("layers").clone();
        assert_eq!(layers.len(), 1, "one layer expected: {layers:?}");
        assert_eq!(layers[0]["mediaType"], "application/vnd.oci.image.layer.v1.tar+gzip");
        let gz =
            self.layout.join("blobs/sha256").join(layers[0]["digest"].as_str().unwrap().trim_start_matches("sha256:"));
        let tar = self.layout.parent().unwrap().join("layer.tar");
        let out = output("gzip -dc", program("gzip").arg("-dc").arg(gz));
        std::fs::write(&tar, out.stdout).unwrap();
        tar
    }
}

/// Runs `deploy/image/build OUT_DIR` (a fresh OUT_DIR) and unpacks what it wrote.
fn build_into(name: &str) -> Result<Built, String> {
    let base = Path::new(env!("CARGO_TARGET_TMPDIR")).join("image").join(name);
    let _ = std::fs::remove_dir_all(&base);
    let out_dir = base.join("out");
    std::fs::create_dir_all(&out_dir).map_err(|e| e.to_string())?;
    let digest = support::images::deploy_image_build(&out_dir)?;
    let archive = out_dir.join(format!("trustmount-{VERSION}.oci.tar"));
    let listed: Vec<String> = std::fs::read_dir(&out_dir)
        .map_err(|e| e.to_string())?
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    if listed != [format!("trustmount-{VERSION}.oci.tar")] {
        return Err(format!("{} holds other than the archive: {listed:?}", out_dir.display()));
    }
    let layout = base.join("layout");
    std::fs::create_dir(&layout).map_err(|e| e.to_string())?;
    let untar =
        Command::new("tar").arg("-xf").arg(&archive).arg("-C").arg(&layout).output().map_err(|e| e.to_string())?;
    if !untar.status.success() {
        return Err(format!("tar -xf {}: {}", archive.display(), text(&untar.stderr)));
    }
    Ok(Built { archive, digest, layout })
}

/// The image every test here reads, built once.
fn built() -> &'static Built {
    static BUILT: OnceLock<Result<Built, String>> = OnceLock::new();
    BUILT.get_or_init(|| build_into("first")).as_ref().unwrap_or_else(|e| panic!("{e}"))
}

fn git(args: &[&str]) -> String {
    text(&output(&format!("git {args:?}"), program("git").current_dir(ROOT).args(args)).stdout).trim().to_owned()
}

/// The commit's time, as the build stamps it (SOURCE_DATE_EPOCH when set).
fn epoch() -> i64 {
    std::env::var("SOURCE_DATE_EPOCH").unwrap_or_else(|_| git(&["log", "-1", "--format=%ct"])).parse().unwrap()
}

fn rfc3339(epoch: i64) -> String {
    let time = time::OffsetDateTime::from_unix_timestamp(epoch).unwrap();
    time.format(&time::format_description::well_known::Rfc3339).unwrap()
}

#[test]
fn the_archive_is_an_oci_layout_and_a_docker_archive_with_the_entrypoint_args_and_labels() {
    let built = built();
    assert!(built.digest.starts_with("sha256:") && built.digest.len() == 71, "printed digest: {:?}", built.digest);
    let mut top: Vec<String> = std::fs::read_dir(&built.layout)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    top.sort();
    assert_eq!(top, ["blobs", "index.json", "manifest.json", "oci-layout"]);

    // The index names the printed manifest, with the names containerd and Docker import it as.
    let index = json(&std::fs::read(built.layout.join("index.json")).unwrap());
    let entries = index["manifests"].as_array().expect("index manifests");
    assert_eq!(entries.len(), 1, "{index}");
    assert_eq!(entries[0]["digest"], built.digest.as_str());
    assert_eq!(entries[0]["mediaType"], "application/vnd.oci.image.manifest.v1+json");
    assert_eq!(entries[0]["annotations"]["org.opencontainers.image.ref.name"], VERSION);
    assert_eq!(entries[0]["annotations"]["io.containerd.image.name"], format!("{IMAGE_NAME}:{VERSION}"));

    // The OCI tools read it: umoci from the layout, skopeo from the archive as OCI and as
    // docker-save (manifest.json), and both routes give the same config.
    let layout_ref = format!("{}:{VERSION}", built.layout.display());
    let stat = output("umoci stat", program("umoci").args(["stat", "--json", "--image", &layout_ref]));
    let history = json(&stat.stdout)["history"].as_array().expect("umoci stat history").clone();
    assert_eq!(history.len(), 1, "one history entry, for the one layer: {history:?}");
    assert_eq!(history[0]["created"], rfc3339(epoch()), "the history's time is the commit's");
    let oci = format!("oci-archive:{}", built.archive.display());
    let docker = format!("docker-archive:{}", built.archive.display());
    let oci_config =
        output("skopeo inspect --config oci-archive", program("skopeo").args(["inspect", "--config", &oci]));
    let docker_config =
        output("skopeo inspect --config docker-archive", program("skopeo").args(["inspect", "--config", &docker]));
    let config = built.config();
    assert_eq!(json(&oci_config.stdout), config);
    assert_eq!(json(&docker_config.stdout), config, "the docker-save view has the same config");
    let docker_inspect = output("skopeo inspect docker-archive", program("skopeo").args(["inspect", &docker]));
    assert_eq!(json(&docker_inspect.stdout)["Layers"].as_array().map(Vec::len), Some(1));

    assert_eq!(config["os"], "linux");
    assert_eq!(config["architecture"], "amd64");
    assert_eq!(config["config"]["Entrypoint"], serde_json::json!(["/trustmount"]));
    assert_eq!(config["config"]["Cmd"], serde_json::json!(["serve"]));
    assert!(config["config"]["Env"].is_null(), "no environment: {config}");
    let created = rfc3339(epoch());
    assert_eq!(config["created"], created.as_str());
    let labels = &config["config"]["Labels"];
    let head = git(&["rev-parse", "HEAD"]);
    let revision = labels["org.opencontainers.image.revision"].as_str().expect("revision label");
    assert!(revision == head || revision == format!("{head}-dirty"), "revision {revision}, HEAD {head}");
    assert_eq!(labels["org.opencontainers.image.version"], VERSION);
    assert_eq!(labels["org.opencontainers.image.source"], REPOSITORY);
    assert_eq!(labels["org.opencontainers.image.created"], created.as_str());
}

/// Where `needle` occurs in `haystack`.
fn positions(haystack: &[u8], needle: &[u8]) -> Vec<usize> {
    haystack.windows(needle.len()).enumerate().filter(|(_, w)| *w == needle).map(|(i, _)| i).collect()
}

/// A PEM private key: its END-less header followed by a body, not just the words (the binary
/// names the labels it refuses).
fn holds_a_pem_private_key(bytes: &[u8]) -> bool {
    positions(bytes, b"PRIVATE KEY-----").into_iter().any(|at| {
        let body = &bytes[at + 16..];
        let body = body.strip_prefix(b"\r").unwrap_or(body);
        body.strip_prefix(b"\n").is_some_and(|b| {
            b.len() >= 64 && b[..64].iter().all(|c| c.is_ascii_alphanumeric() || *c == b'+' || *c == b'/')
        })
    })
}

#[test]
fn the_only_layer_holds_only_the_static_binary() {
    let built = built();
    let tar = built.layer_tar();
    let listing = output(
        "tar -tv",
        program("tar")
            .env("TZ", "UTC")
            .args(["--list", "--verbose", "--numeric-owner", "--full-time", "--file"])
            .arg(&tar),
    );
    let lines: Vec<&str> = std::str::from_utf8(&listing.stdout).unwrap().lines().collect();
    assert_eq!(lines.len(), 1, "one entry expected:\n{}", text(&listing.stdout));
    let fields: Vec<&str> = lines[0].split_whitespace().collect();
    let mtime = time::OffsetDateTime::from_unix_timestamp(epoch()).unwrap();
    let mtime =
        mtime.format(time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second]")).unwrap();
    assert_eq!(fields[0], "-rwxr-xr-x", "{}", lines[0]);
    assert_eq!(fields[1], "0/0", "{}", lines[0]);
    assert_eq!(format!("{} {}", fields[3], fields[4]), mtime, "{}", lines[0]);
    assert_eq!(fields[5], "trustmount", "{}", lines[0]);

    let dir = tar.parent().unwrap().join("layer");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir(&dir).unwrap();
    output("tar -x", program("tar").arg("-xf").arg(&tar).arg("-C").arg(&dir));
    let binary = std::fs::read(dir.join("trustmount")).unwrap();
    let built_binary = Path::new(ROOT).join("target/x86_64-unknown-linux-gnu/release/trustmount");
    if let Ok(target_binary) = std::fs::read(&built_binary) {
        assert!(binary == target_binary, "the layer's binary is not {}", built_binary.display());
    }

    // Static: no program interpreter, no shared libraries.
    let elf = output(
        "readelf",
        program("readelf").args(["--program-headers", "--dynamic", "--wide"]).arg(dir.join("trustmount")),
    );
    let elf = text(&elf.stdout);
    assert!(!elf.contains("INTERP") && !elf.contains("(NEEDED)"), "not a static binary:\n{elf}");

    // Nothing of this machine's paths (the checkout, the cargo home) and no key, in the binary
    // or any other blob.
    let cargo_home =
        std::env::var("CARGO_HOME").unwrap_or_else(|_| format!("{}/.cargo", std::env::var("HOME").unwrap()));
    for place in [ROOT, cargo_home.as_str()] {
        let found = positions(&binary, place.as_bytes());
        assert!(found.is_empty(), "the binary holds {place} {} times (remap-path-prefix)", found.len());
    }
    assert!(!holds_a_pem_private_key(&binary), "the binary holds a PEM private key");
    for entry in std::fs::read_dir(built.layout.join("blobs/sha256")).unwrap() {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap();
        assert!(!holds_a_pem_private_key(&bytes));
    }
    let blobs = std::fs::read_dir(built.layout.join("blobs/sha256")).unwrap().count();
    assert_eq!(blobs, 3, "blobs: the manifest, the config and the layer, nothing else");
}

/// Runs the image's binary chrooted into `rootfs` (nothing but the image and what the test
/// put there), with an empty environment.
fn in_root(rootfs: &Path, args: &[&str]) -> Output {
    program("unshare")
        .env_clear()
        .arg("--mount")
        .arg(format!("--root={}", rootfs.display()))
        .arg("/trustmount")
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn the_binary_runs_from_the_unpacked_image_in_an_empty_root() {
    let built = built();
    let bundle = built.layout.parent().unwrap().join("bundle");
    let _ = std::fs::remove_dir_all(&bundle);
    let layout_ref = format!("{}:{VERSION}", built.layout.display());
    output("umoci unpack", program("umoci").args(["unpack", "--image", &layout_ref]).arg(&bundle));
    let rootfs = bundle.join("rootfs");
    let entries: Vec<String> =
        std::fs::read_dir(&rootfs).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    assert_eq!(entries, ["trustmount"], "the unpacked image holds only the binary");
    // umoci's runtime config runs the image's entrypoint with its default args.
    let runtime = json(&std::fs::read(bundle.join("config.json")).unwrap());
    assert_eq!(runtime["process"]["args"], serde_json::json!(["/trustmount", "serve"]));

    // A directory for the inputs and outputs, and no /etc, /lib, /usr, /dev, /proc or /tmp.
    let work = rootfs.join("work");
    std::fs::create_dir(&work).unwrap();
    let ca = TestCa::new(&work, "image");
    let rendered =
        in_root(&rootfs, &["render", "--out", "/work/out", "--pem", "/work/image.pem", "--system-roots", "embedded"]);
    assert_success("render in the empty root", &rendered);
    let listed = in_root(&rootfs, &["inspect", "/work/out/ca-certificates.crt"]);
    assert_success("inspect in the empty root", &listed);
    let listing = text(&listed.stdout);
    assert!(listing.contains(&ca.common_name), "inspect does not list the test CA:\n{listing}");
    assert!(listing.contains("ISRG Root X1"), "inspect does not list the embedded Mozilla roots:\n{listing}");
    let listed = in_root(&rootfs, &["inspect", "--json", "/work/out"]);
    assert_success("inspect --json of the rendered directory in the empty root", &listed);
    assert!(text(&listed.stdout).contains(&ca.common_name), "{}", text(&listed.stdout));
    for (what, out) in [("render", &rendered), ("inspect", &listed)] {
        let stderr = text(&out.stderr);
        assert!(!stderr.to_lowercase().contains("warn"), "{what} warned in the empty root:\n{stderr}");
    }
    // What ran found no libc, loader or configuration: there is none.
    let mut entries: Vec<String> =
        std::fs::read_dir(&rootfs).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    entries.sort();
    assert_eq!(entries, ["trustmount", "work"]);
}

#[test]
fn building_again_gives_the_same_digest_and_the_same_archive() {
    let first = built();
    let second = build_into("second").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(second.digest, first.digest, "the manifest digest differs between two builds");
    let (a, b) = (std::fs::read(&first.archive).unwrap(), std::fs::read(&second.archive).unwrap());
    assert!(a == b, "the archives differ ({} and {} bytes)", a.len(), b.len());
}

/// The `KEY VALUE…` lines of `text` that start with `key` (Dockerfile instructions, shell
/// assignments), joined over line continuations.
fn logical_lines(text: &str) -> Vec<String> {
    let mut lines = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        if line.trim_start().starts_with('#') && current.is_empty() {
            continue;
        }
        match line.strip_suffix('\\') {
            Some(head) => current.push_str(head),
            None => {
                current.push_str(line);
                lines.push(std::mem::take(&mut current));
            }
        }
    }
    lines
}

/// The rustc flags of a RUSTFLAGS value, remap targets kept and remap sources dropped (they
/// are where the build runs).
fn flags(rustflags: &str) -> Vec<String> {
    rustflags
        .split_whitespace()
        .map(|flag| match flag.strip_prefix("--remap-path-prefix=") {
            Some(remap) => format!("--remap-path-prefix=…={}", remap.rsplit_once('=').unwrap().1),
            None => flag.to_owned(),
        })
        .collect()
}

#[test]
fn the_dockerfile_builds_what_the_script_builds() {
    let script = std::fs::read_to_string(Path::new(ROOT).join("deploy/image/build")).unwrap();
    let dockerfile = std::fs::read_to_string(Path::new(ROOT).join("deploy/image/Dockerfile")).unwrap();
    let script_lines = logical_lines(&script);
    let docker_lines = logical_lines(&dockerfile);
    let find = |lines: &[String], prefix: &str| -> String {
        let found: Vec<&String> = lines.iter().filter(|l| l.trim_start().starts_with(prefix)).collect();
        assert_eq!(found.len(), 1, "one line starting {prefix:?} expected: {found:?}");
        found[0].trim_start()[prefix.len()..].trim().to_owned()
    };
    let unquote = |s: String| s.trim_matches('"').to_owned();

    let script_flags = flags(&unquote(find(&script_lines, "export RUSTFLAGS=")));
    let docker_flags = flags(&unquote(find(&docker_lines, "ENV RUSTFLAGS=")));
    assert_eq!(docker_flags, script_flags, "RUSTFLAGS");
    assert!(script_flags.contains(&"target-feature=+crt-static".to_owned()), "{script_flags:?}");
    assert_eq!(find(&docker_lines, "WORKDIR"), "/build/trustmount", "the checkout's place, as the script remaps it");

    let target = unquote(find(&script_lines, "target="));
    let script_build = find(&script_lines, "cargo build");
    let docker_build = find(&docker_lines, "RUN cargo build");
    let build_args =
        |line: &str| line.split("&&").next().unwrap().split_whitespace().map(str::to_owned).collect::<Vec<_>>();
    assert_eq!(
        build_args(docker_build.as_str()),
        build_args(script_build.replace("\"$target\"", &target).as_str()),
        "the cargo build command"
    );

    let path = unquote(find(&script_lines, "image_path="));
    assert_eq!(path, "/trustmount");
    assert_eq!(find(&docker_lines, "ENTRYPOINT"), format!("[\"{path}\"]"));
    assert_eq!(find(&docker_lines, "CMD"), "[\"serve\"]");
    assert!(
        script.contains("--config.entrypoint \"$image_path\" --config.cmd serve"),
        "the script's entrypoint and args"
    );
    assert!(
        docker_lines.iter().any(|l| l.starts_with("COPY --from=build") && l.ends_with(&format!(" {path}"))),
        "the Dockerfile copies the binary to {path}"
    );
    assert_eq!(find(&docker_lines, "ARG VERSION="), VERSION, "the Dockerfile's default version is Cargo.toml's");

    // The same labels, with the same source.
    let label_keys = |text: &str| {
        let mut keys: Vec<String> = positions(text.as_bytes(), b"org.opencontainers.image.")
            .into_iter()
            .map(|at| text[at..].split(['=', ' ', '"']).next().unwrap().to_owned())
            .collect();
        keys.sort();
        keys.dedup();
        keys
    };
    let label_lines = |lines: &[String], prefix: &str| {
        lines.iter().filter(|l| l.trim_start().starts_with(prefix)).cloned().collect::<Vec<_>>().join("\n")
    };
    let script_labels = label_keys(&label_lines(&script_lines, "umoci config"));
    assert_eq!(script_labels.len(), 6, "{script_labels:?}");
    assert_eq!(label_keys(&label_lines(&docker_lines, "LABEL")), script_labels);
    assert!(dockerfile.contains(&format!("org.opencontainers.image.source=\"{REPOSITORY}\"")));
}

#[test]
fn containerd_imports_the_archive_and_runs_the_image() {
    let built = built();
    let containerd = Containerd::start();
    let name = format!("{IMAGE_NAME}:{VERSION}");
    let archive = built.archive.to_str().unwrap();
    let imported = containerd.ctr(&["images", "import", "--snapshotter", "native", archive]);
    assert_success(&format!("ctr images import\n{}", containerd.log()), &imported);
    let images = containerd.ctr(&["images", "list"]);
    assert_success("ctr images list", &images);
    let line = text(&images.stdout).lines().find(|l| l.starts_with(&format!("{name} "))).map(str::to_owned);
    let line = line.unwrap_or_else(|| panic!("{name} not imported:\n{}", text(&images.stdout)));
    assert!(line.contains(&built.digest), "imported under another digest: {line}");

    // Its default process: the entrypoint with `serve`, which asks for the node's name.
    let default = containerd.ctr(&["run", "--rm", "--snapshotter", "native", &name, "trustmount-image-default"]);
    let said = format!("{}{}", text(&default.stdout), text(&default.stderr));
    assert!(!default.status.success(), "serve without --node-id succeeded:\n{said}");
    assert!(
        said.contains("--node-id") && said.contains("trustmount serve"),
        "not the entrypoint with `serve`:\n{said}\n{}",
        containerd.log()
    );

    // And a render into a bind-mounted directory, read back from here.
    let work = tempfile::tempdir().unwrap();
    let ca = TestCa::new(work.path(), "ctr");
    let mount = format!("type=bind,src={},dst=/work,options=rbind:rw", work.path().display());
    let rendered = containerd.ctr(&[
        "run",
        "--rm",
        "--snapshotter",
        "native",
        "--mount",
        &mount,
        &name,
        "trustmount-image-render",
        "/trustmount",
        "render",
        "--out",
        "/work/out",
        "--pem",
        "/work/ctr.pem",
        "--system-roots",
        "embedded",
    ]);
    assert_success(&format!("ctr run render\n{}", containerd.log()), &rendered);
    let bundle = std::fs::read_to_string(work.path().join("out/ca-certificates.crt")).unwrap();
    assert!(bundle.contains(ca.pem.trim()), "the bundle rendered in the container lacks the test CA");
}

/// Reads `reader` line by line into a channel, until it closes.
fn lines_of(reader: impl std::io::Read + Send + 'static) -> std::sync::mpsc::Receiver<String> {
    let (send, receive) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(reader).lines().map_while(Result::ok) {
            if send.send(line).is_err() {
                break;
            }
        }
    });
    receive
}

/// Collects lines until one contains `wanted`; panics with all of them when the lines end or
/// the limit (a bound on a hang, not a timed assertion) passes first.
fn wait_for_line(lines: &std::sync::mpsc::Receiver<String>, seen: &mut Vec<String>, wanted: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) => {
                let found = line.contains(wanted);
                seen.push(line);
                if found {
                    return;
                }
            }
            Err(error) => panic!("no line with {wanted:?} ({error}):\n{}", seen.join("\n")),
        }
    }
}

/// The image run as the DaemonSet runs it — privileged, in the pod's ServiceAccount, the API
/// server found by KUBERNETES_SERVICE_HOST (an IP, no DNS) — by a real containerd against the
/// real API server: the static binary's TLS (rustls with ring) and its token work with nothing
/// but the binary in the root.
#[test]
fn in_containerd_the_image_serves_in_cluster_against_the_real_api_server() {
    let built = built();
    let plane = support::control_plane::ControlPlane::shared();
    let dir = tempfile::tempdir().unwrap();
    let identity = support::block_on(async {
        let admin = plane.admin_client().await;
        support::objects::ensure_shipped_csidriver(&admin).await;
        let namespace = plane.namespace("image").await;
        support::deploy::driver_identity(plane, &admin, &namespace, dir.path()).await
    });
    let account = dir.path().join("serviceaccount");
    std::fs::create_dir(&account).unwrap();
    std::fs::write(account.join("token"), &identity.token).unwrap();
    std::fs::copy(&plane.ca_cert, account.join("ca.crt")).unwrap();
    std::fs::write(account.join("namespace"), identity.user.split(':').nth(2).unwrap()).unwrap();
    let work = dir.path().join("work");
    std::fs::create_dir(&work).unwrap();
    let authority = plane.server.strip_prefix("https://").expect("an https server URL");
    let (host, port) = authority.trim_end_matches('/').rsplit_once(':').expect("host:port");
    assert!(host.parse::<std::net::IpAddr>().is_ok(), "the API server's address is an IP: {host}");

    let containerd = Containerd::start();
    let name = format!("{IMAGE_NAME}:{VERSION}");
    assert_success(
        "ctr images import",
        &containerd.ctr(&["images", "import", "--snapshotter", "native", built.archive.to_str().unwrap()]),
    );
    let id = "trustmount-image-serve";
    let mut serve = program("ctr")
        .arg("--address")
        .arg(containerd.socket())
        .args(["run", "--rm", "--snapshotter", "native", "--privileged", "--net-host"])
        .args([
            "--env",
            &format!("KUBERNETES_SERVICE_HOST={host}"),
            "--env",
            &format!("KUBERNETES_SERVICE_PORT={port}"),
        ])
        .args([
            "--mount",
            &format!(
                "type=bind,src={},dst=/var/run/secrets/kubernetes.io/serviceaccount,options=rbind:ro",
                account.display()
            ),
        ])
        .args(["--mount", &format!("type=bind,src={},dst=/work,options=rbind:rw", work.display())])
        .args([
            name.as_str(),
            id,
            "/trustmount",
            "serve",
            "--node-id",
            "image-node",
            "--endpoint",
            "unix:///work/csi.sock",
        ])
        .args(["--state-dir", "/work/state", "--kubelet-dir", "/work/kubelet", "--system-roots", "embedded"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = lines_of(serve.stderr.take().unwrap());
    let _stdout = lines_of(serve.stdout.take().unwrap());
    let mut seen = Vec::new();
    wait_for_line(&stderr, &mut seen, "cluster sources on");
    wait_for_line(&stderr, &mut seen, "the CSIDriver sets podInfoOnMount: true");
    let log = seen.join("\n");
    assert!(log.contains("in-cluster"), "not in-cluster:\n{log}");
    assert!(work.join("csi.sock").exists(), "no CSI socket in the mounted directory:\n{log}");
    // Registration is on by default: the kubelet's plugin watcher would find this socket.
    let registration = work.join("kubelet/plugins_registry/csi.trustmount.io-reg.sock");
    assert!(registration.exists(), "no registration socket in <kubelet-dir>/plugins_registry:\n{log}");

    assert_success("ctr task kill", &containerd.ctr(&["task", "kill", "--signal", "SIGTERM", id]));
    wait_for_line(&stderr, &mut seen, "shut down");
    let status = serve.wait().unwrap();
    assert!(status.success(), "serve in containerd ended {status}:\n{}", seen.join("\n"));
    assert!(!registration.exists(), "the registration socket outlived the driver");
}
