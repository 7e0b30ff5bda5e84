//! PEM framing: find `-----BEGIN x-----` … `-----END x-----` blocks in arbitrary text, and write
//! them back. Written by hand (not a lenient library) so that every malformed case is reported
//! rather than silently dropped, and so the `# source:` comments of our own bundles are visible.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

/// One PEM block, in input order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Block {
    /// 1-based position among the blocks of the input, as shown in error messages.
    pub index: usize,
    pub label: String,
    /// The decoded bytes, or why the block is malformed.
    pub body: Result<Vec<u8>, PemError>,
    /// The last `# source: …` comment between the previous block and this one.
    pub source_comment: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum PemError {
    #[error("the BEGIN line is malformed (expected `-----BEGIN <LABEL>-----`)")]
    BadBegin,
    #[error("the block has no matching END line (is the file truncated?)")]
    Unterminated,
    #[error("the END line does not match the BEGIN line")]
    MismatchedEnd,
    #[error("the body is not valid base64")]
    BadBase64,
}

const BEGIN: &[u8] = b"-----BEGIN";
const END: &[u8] = b"-----END";
const DASHES: &[u8] = b"-----";
const SOURCE_COMMENT: &[u8] = b"# source:";

/// Whether the input is PEM at all; otherwise it is treated as one DER certificate.
pub(crate) fn looks_like_pem(bytes: &[u8]) -> bool {
    bytes.windows(BEGIN.len()).any(|w| w == BEGIN)
}

struct Open {
    label: String,
    body: Vec<u8>,
    source_comment: Option<String>,
}

/// Splits the input into blocks. Never fails: malformed blocks carry their error, so the caller
/// decides (strict or best-effort) and can still see every label, e.g. a private key after a
/// broken block.
pub(crate) fn read_blocks(input: &[u8]) -> Vec<Block> {
    let mut blocks = Vec::new();
    let mut open: Option<Open> = None;
    let mut source_comment = None;
    let push = |blocks: &mut Vec<Block>, label, body, source_comment| {
        let index = blocks.len() + 1;
        blocks.push(Block { index, label, body, source_comment });
    };

    for line in input.split(|&b| b == b'\n') {
        let line = line.trim_ascii();
        if line.starts_with(BEGIN) {
            if let Some(unterminated) = open.take() {
                push(&mut blocks, unterminated.label, Err(PemError::Unterminated), unterminated.source_comment);
            }
            let comment = source_comment.take();
            match begin_label(line) {
                Ok(label) => {
                    open = Some(Open { label, body: Vec::new(), source_comment: comment });
                }
                Err(label) => push(&mut blocks, label, Err(PemError::BadBegin), comment),
            }
            continue;
        }
        match open.as_mut() {
            Some(block) if line.starts_with(END) => {
                let expected = format!("-----END {}-----", block.label);
                let body = if line != expected.as_bytes() {
                    Err(PemError::MismatchedEnd)
                } else {
                    STANDARD.decode(&block.body).map_err(|_| PemError::BadBase64)
                };
                if let Some(done) = open.take() {
                    push(&mut blocks, done.label, body, done.source_comment);
                }
            }
            // RFC 7468 allows whitespace anywhere in the body.
            Some(block) => block.body.extend(line.iter().filter(|b| !b.is_ascii_whitespace())),
            None => {
                if let Some(rest) = line.strip_prefix(SOURCE_COMMENT) {
                    source_comment = Some(String::from_utf8_lossy(rest.trim_ascii()).into_owned());
                }
            }
        }
    }
    if let Some(unterminated) = open {
        push(&mut blocks, unterminated.label, Err(PemError::Unterminated), unterminated.source_comment);
    }
    blocks
}

/// `-----BEGIN LABEL-----` → `LABEL`. On a malformed line, still returns a best guess at the
/// label (as `Err`) so a broken private-key header is recognised as a private key.
fn begin_label(line: &[u8]) -> Result<String, String> {
    let rest = &line[BEGIN.len()..];
    let label = rest.strip_prefix(b" ").and_then(|r| r.strip_suffix(DASHES)).filter(|l| is_valid_label(l));
    match label {
        Some(l) => Ok(String::from_utf8_lossy(l).into_owned()),
        None => {
            let guess = rest.iter().copied().skip_while(|&b| b == b' ').take_while(|&b| b != b'-').collect::<Vec<u8>>();
            Err(String::from_utf8_lossy(guess.trim_ascii()).into_owned())
        }
    }
}

/// RFC 7468 labels: non-empty, with at most single inner hyphens (so the dashes of the
/// boundary cannot be part of it).
fn is_valid_label(label: &[u8]) -> bool {
    !label.is_empty() && !label.starts_with(b"-") && !label.ends_with(b"-") && !label.windows(2).any(|w| w == b"--")
}

/// Encodes one block with 64-column base64 lines and LF endings.
pub(crate) fn write_block(out: &mut String, label: &str, der: &[u8]) {
    let encoded = STANDARD.encode(der);
    out.push_str("-----BEGIN ");
    out.push_str(label);
    out.push_str("-----\n");
    out.reserve(encoded.len() + encoded.len() / 64 + label.len() * 2 + 32);
    // base64 output is ASCII, so every byte offset is a char boundary.
    for start in (0..encoded.len()).step_by(64) {
        out.push_str(&encoded[start..encoded.len().min(start + 64)]);
        out.push('\n');
    }
    out.push_str("-----END ");
    out.push_str(label);
    out.push_str("-----\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pem(label: &str, der: &[u8]) -> String {
        let mut s = String::new();
        write_block(&mut s, label, der);
        s
    }

    #[test]
    fn writes_64_column_lines_and_reads_them_back() {
        let der: Vec<u8> = (0..=255).collect();
        let text = pem("CERTIFICATE", &der);
        assert!(text.lines().all(|l| l.len() <= 64));
        assert!(text.lines().any(|l| l.len() == 64));
        let blocks = read_blocks(text.as_bytes());
        assert_eq!(blocks.len(), 1);
        assert_eq!(blocks[0].label, "CERTIFICATE");
        assert_eq!(blocks[0].body, Ok(der));
    }

    #[test]
    fn finds_blocks_among_text_with_crlf_and_remembers_source_comments() {
        let text = format!(
            "hello\r\n# source: a\r\n{}between\n# source: ignored\n# source: b\n{}{}trailer",
            pem("CERTIFICATE", b"one").replace('\n', "\r\n"),
            pem("X509 CRL", b"two"),
            pem("CERTIFICATE", b"three"),
        );
        let blocks = read_blocks(text.as_bytes());
        let seen: Vec<_> =
            blocks.iter().map(|b| (b.index, b.label.as_str(), b.body.clone(), b.source_comment.clone())).collect();
        assert_eq!(
            seen,
            [
                (1, "CERTIFICATE", Ok(b"one".to_vec()), Some("a".into())),
                (2, "X509 CRL", Ok(b"two".to_vec()), Some("b".into())),
                (3, "CERTIFICATE", Ok(b"three".to_vec()), None),
            ]
        );
    }

    #[test]
    fn reports_unterminated_mismatched_and_bad_base64_blocks() {
        let ok = pem("CERTIFICATE", b"abc");
        let unterminated = "-----BEGIN CERTIFICATE-----\nYWJj\n";
        let text = format!("{unterminated}{ok}");
        let blocks = read_blocks(text.as_bytes());
        assert_eq!(blocks[0].body, Err(PemError::Unterminated));
        assert_eq!(blocks[1].body, Ok(b"abc".to_vec()));

        let mismatched = "-----BEGIN CERTIFICATE-----\nYWJj\n-----END X509 CRL-----\n";
        assert_eq!(read_blocks(mismatched.as_bytes())[0].body, Err(PemError::MismatchedEnd));

        let bad = "-----BEGIN CERTIFICATE-----\nYW*j\n-----END CERTIFICATE-----\n";
        assert_eq!(read_blocks(bad.as_bytes())[0].body, Err(PemError::BadBase64));
        let no_padding = "-----BEGIN CERTIFICATE-----\nYWI\n-----END CERTIFICATE-----\n";
        assert_eq!(read_blocks(no_padding.as_bytes())[0].body, Err(PemError::BadBase64));
    }

    #[test]
    fn malformed_begin_lines_keep_a_label_guess() {
        let text = "-----BEGIN RSA PRIVATE KEY\nxx\n";
        let blocks = read_blocks(text.as_bytes());
        assert_eq!(blocks[0].label, "RSA PRIVATE KEY");
        assert_eq!(blocks[0].body, Err(PemError::BadBegin));
    }

    #[test]
    fn detects_pem_by_its_begin_marker() {
        assert!(looks_like_pem(b"junk -----BEGIN CERTIFICATE-----"));
        assert!(!looks_like_pem(b"\x30\x82\x01\x00"));
    }
}
