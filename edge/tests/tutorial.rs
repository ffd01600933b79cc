//! Runs docs/tutorials/os-replacement.md: every ```bash block (except those marked
//! `<!-- tutorial-test: skip -->`, which build or call cargo) runs in one bash session
//! with the freshly built `bauxite` first on PATH, and every ```text block must match
//! the output of the bash block before it: each line, in order, must match some output
//! line, where `...` matches anything and a line of only `...` is skipped.
// Test support helpers panic on setup failure, like the tests themselves.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;

const SKIP: &str = "<!-- tutorial-test: skip -->";

#[derive(Debug)]
struct Block {
    code: String,
    expected: Vec<String>,
}

fn blocks(md: &str) -> (Vec<Block>, usize) {
    let mut out: Vec<Block> = Vec::new();
    let mut skipped = 0;
    let mut lines = md.lines().peekable();
    let mut skip_next = false;
    let mut last_bash_skipped = false;
    while let Some(line) = lines.next() {
        let fence = line.trim_start();
        if fence.trim() == SKIP {
            skip_next = true;
            continue;
        }
        let Some(lang) = fence.strip_prefix("```") else {
            continue;
        };
        let body: Vec<&str> = lines
            .by_ref()
            .take_while(|l| l.trim_start() != "```")
            .collect();
        match lang.trim() {
            "bash" if skip_next => {
                skipped += 1;
                last_bash_skipped = true;
            }
            "bash" => {
                last_bash_skipped = false;
                out.push(Block {
                    code: body.join("\n"),
                    expected: Vec::new(),
                });
            }
            "text" if !last_bash_skipped => {
                let last = out.last_mut().expect("a text block follows a bash block");
                assert!(
                    last.expected.is_empty(),
                    "two text blocks after one bash block"
                );
                last.expected = body.iter().map(|s| s.to_string()).collect();
            }
            _ => {}
        }
        skip_next = false;
    }
    (out, skipped)
}

fn line_matches(pattern: &str, line: &str) -> bool {
    let mut rest = line;
    for frag in pattern.split("...") {
        match rest.find(frag) {
            Some(pos) => rest = &rest[pos + frag.len()..],
            None => return false,
        }
    }
    true
}

fn check(block: usize, expected: &[String], output: &str) {
    let lines: Vec<&str> = output.lines().collect();
    let mut at = 0;
    for pat in expected
        .iter()
        .map(|p| p.trim())
        .filter(|p| !p.is_empty() && *p != "...")
    {
        match lines[at..].iter().position(|l| line_matches(pat, l)) {
            Some(i) => at += i + 1,
            None => panic!(
                "tutorial block {block}: expected a line matching\n  {pat}\nafter line {at} of its output:\n{output}"
            ),
        }
    }
}

#[test]
fn os_replacement_tutorial_runs_as_written() {
    let md_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/tutorials/os-replacement.md");
    let md = std::fs::read_to_string(&md_path).unwrap();
    let (blocks, skipped) = blocks(&md);
    assert!(
        blocks.len() >= 20,
        "found only {} runnable blocks",
        blocks.len()
    );
    assert!(skipped <= 4, "too many skipped blocks: {skipped}");
    let mut script = String::from("exec 2>&1\nset -u\n");
    for (i, b) in blocks.iter().enumerate() {
        script.push_str(&format!("echo '@@BLOCK {i}@@'\n{}\n", b.code));
    }
    script.push_str("echo '@@END@@'\n");
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_bauxite")).parent().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = Command::new("bash")
        .arg("-c")
        .arg(&script)
        .env("PATH", path)
        .env("TMPDIR", tmp.path())
        .env_remove("BAUXITE_CONFIG")
        .env_remove("BAUXITE_STATE_ROOT_SKIP_MOUNT_CHECK")
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        text.contains("@@END@@"),
        "the script stopped early:\n{text}"
    );
    let mut parts = text.split("@@BLOCK ").skip(1);
    for (i, b) in blocks.iter().enumerate() {
        let part = parts
            .next()
            .unwrap_or_else(|| panic!("no output for block {i}:\n{text}"));
        let body = part.split_once("@@\n").map_or("", |(_, body)| body);
        check(i, &b.expected, body);
    }
}

#[test]
fn matcher_semantics() {
    assert!(line_matches("Exit: 5", "Exit: 5"));
    assert!(line_matches("INFO x=...y=1", " INFO x=abc y=1"));
    assert!(!line_matches("Exit: 5", "Exit: 0"));
    assert!(!line_matches("a...b", "b a"));
}
