//! Which delegated role may speak for which target path.
//!
//! Invariant: a wildcard never crosses a `/`: a pattern and a path match only if they
//! have the same number of `/`-separated segments and each pair matches as a shell
//! pattern (`*`, `?`, `[set]`, `[!set]`), case-sensitively, as python-tuf and the TUF
//! specification's examples read it.

use sha2::Digest as _;

/// Whether `path` matches the delegation pattern `pattern`.
pub fn path_matches(pattern: &str, path: &str) -> bool {
    let pattern_parts: Vec<&str> = pattern.split('/').collect();
    let path_parts: Vec<&str> = path.split('/').collect();
    pattern_parts.len() == path_parts.len()
        && pattern_parts
            .iter()
            .zip(&path_parts)
            .all(|(p, s)| segment_matches(p, s))
}

/// Whether the SHA-256 of `path` (hex) starts with `prefix`.
pub fn hash_prefix_matches(prefix: &str, path: &str) -> bool {
    hex::encode(sha2::Sha256::digest(path.as_bytes())).starts_with(prefix)
}

/// One shell-pattern segment against one path segment (no `/` in either).
fn segment_matches(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    // Iterative matcher with one backtrack point for the last `*`: linear in practice,
    // and bounded by |p| * |t| in the worst case (no exponential blow-up).
    let (mut pi, mut ti) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() {
            match p[pi] {
                '*' => {
                    star = Some((pi, ti));
                    pi += 1;
                    continue;
                }
                '?' => {
                    pi += 1;
                    ti += 1;
                    continue;
                }
                '[' => {
                    if let Some((matched, next)) = class_matches(&p, pi, t[ti]) {
                        if matched {
                            pi = next;
                            ti += 1;
                            continue;
                        }
                    } else if t[ti] == '[' {
                        // An unterminated `[` is a literal character.
                        pi += 1;
                        ti += 1;
                        continue;
                    }
                }
                c if c == t[ti] => {
                    pi += 1;
                    ti += 1;
                    continue;
                }
                _ => {}
            }
        }
        match star {
            Some((sp, st)) => {
                pi = sp + 1;
                ti = st + 1;
                star = Some((sp, st + 1));
            }
            None => return false,
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

/// Matches `c` against the class starting at `p[start] == '['`; returns whether it
/// matched and the index after the closing `]`, or `None` if the class is unterminated.
fn class_matches(p: &[char], start: usize, c: char) -> Option<(bool, usize)> {
    let mut i = start + 1;
    let negated = matches!(p.get(i), Some('!'));
    if negated {
        i += 1;
    }
    let mut matched = false;
    let mut first = true;
    loop {
        let &ch = p.get(i)?;
        if ch == ']' && !first {
            return Some((matched != negated, i + 1));
        }
        first = false;
        if p.get(i + 1) == Some(&'-') && p.get(i + 2).is_some_and(|&e| e != ']') {
            let hi = p[i + 2];
            if ch <= c && c <= hi {
                matched = true;
            }
            i += 3;
        } else {
            if ch == c {
                matched = true;
            }
            i += 1;
        }
    }
}

/// Name of the succinct hash-bin role (TAP 15) responsible for `path`.
pub(crate) fn succinct_role_for(name_prefix: &str, bit_length: u32, path: &str) -> String {
    let digest = sha2::Sha256::digest(path.as_bytes());
    let first = u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]]);
    let bin = if bit_length == 0 {
        0
    } else {
        first >> (32 - bit_length)
    };
    let width = succinct_suffix_width(bit_length);
    format!("{name_prefix}-{bin:0width$x}")
}

/// Hex digits of the largest bin number.
pub(crate) fn succinct_suffix_width(bit_length: u32) -> usize {
    let bins_minus_one = (1u64 << bit_length) - 1;
    format!("{bins_minus_one:x}").len()
}

/// Whether `role` is one of the succinct bins `name_prefix-XX` for `bit_length`.
pub(crate) fn is_succinct_role(name_prefix: &str, bit_length: u32, role: &str) -> bool {
    let Some(suffix) = role
        .strip_prefix(name_prefix)
        .and_then(|r| r.strip_prefix('-'))
    else {
        return false;
    };
    suffix.len() == succinct_suffix_width(bit_length)
        && u64::from_str_radix(suffix, 16).is_ok_and(|bin| bin < (1u64 << bit_length))
        && suffix
            .chars()
            .all(|c| c.is_ascii_digit() || c.is_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_patterns_per_segment() {
        assert!(path_matches("*.md", "README.md"));
        assert!(!path_matches("*.md", "releases/README.md"));
        assert!(path_matches("releases/*/*", "releases/x/x_v1"));
        assert!(path_matches("foo-?.tgz", "foo-1.tgz"));
        assert!(!path_matches("foo-?.tgz", "foo-alpha.tgz"));
        assert!(!path_matches("*.md", "README.MD"));
        assert!(path_matches("[a-c]x", "bx"));
        assert!(!path_matches("[!a-c]x", "bx"));
        assert!(path_matches("[x", "[x"));
        assert!(path_matches("*", ""));
        assert!(path_matches("a*b*c", "aXXbYYc"));
        assert!(!path_matches("a*b*c", "aXXbYY"));
    }

    #[test]
    fn succinct_bins() {
        assert_eq!(succinct_suffix_width(8), 2);
        assert_eq!(succinct_suffix_width(1), 1);
        let role = succinct_role_for("bin", 8, "some/target");
        assert!(is_succinct_role("bin", 8, &role));
        assert!(!is_succinct_role("bin", 8, "bin-100"));
        assert!(!is_succinct_role("bin", 8, "other-00"));
    }
}
