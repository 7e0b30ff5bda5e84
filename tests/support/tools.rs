//! The external programs the tests drive. A missing one fails the test with the command that
//! installs it; a test never passes or skips because a tool is absent.

use std::path::{Path, PathBuf};

/// Program → the Debian package `tests/run` installs it from.
const PACKAGES: &[(&str, &str)] = &[
    ("curl", "curl"),
    ("openssl", "openssl"),
    ("gnutls-cli", "gnutls-bin"),
    ("java", "default-jdk-headless"),
    ("javac", "default-jdk-headless"),
    ("keytool", "default-jdk-headless"),
    ("ruby", "ruby"),
    ("php", "php-cli"),
    ("node", "nodejs"),
    ("unshare", "util-linux"),
    ("python3", "python3"),
];

/// What to run to get `program`.
pub fn install_hint(program: &str) -> String {
    let name = Path::new(program).file_name().and_then(|name| name.to_str()).unwrap_or(program);
    match (name, PACKAGES.iter().find(|(known, _)| *known == name)) {
        ("go", _) => "run `tests/run`; it needs Go 1.26 or later on PATH".to_string(),
        (_, Some((_, package))) => {
            format!("run `tests/run` (it installs what the tests need) or `apt-get install {package}`")
        }
        (_, None) => "run `tests/run` (it installs what the tests need)".to_string(),
    }
}

/// Panics, naming the install command, unless every program is on PATH.
pub fn require(programs: &[&str]) {
    for program in programs {
        which(program);
    }
}

/// The absolute path of `program` on this process's PATH (for a child run with another PATH),
/// or a panic naming the install command.
pub fn which(program: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| panic!("{program} is not on PATH: {}", install_hint(program)))
}

/// The panic for a program that could not be started.
pub fn spawn_failed(program: &std::ffi::OsStr, error: std::io::Error) -> ! {
    let program = program.to_string_lossy();
    if error.kind() == std::io::ErrorKind::NotFound {
        panic!("{program} is not installed: {}", install_hint(&program));
    }
    panic!("cannot run {program}: {error}");
}
