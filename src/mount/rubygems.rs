//! RubyGems: which `.gem` a compact-index `/info/NAME` line describes, and
//! its recorded sha256. A gem file is `NAME-VERSION.gem` or
//! `NAME-VERSION-PLATFORM.gem`, and names and platforms contain dashes, so a
//! file name is never split: each `/info` line is turned into the file name it
//! stands for and compared whole.

/// The names a `.gem` file could belong to: every prefix ending before a `-`
/// (`a-b-1.0-x86_64-linux` → `a`, `a-b`, `a-b-1.0`, `a-b-1.0-x86_64`).
/// The caller looks each up in the cached `/info` documents.
pub fn candidate_names(file_name: &str) -> Vec<&str> {
    let Some(stem) = file_name.strip_suffix(".gem") else {
        return Vec::new();
    };
    stem.match_indices('-')
        .map(|(i, _)| &stem[..i])
        .filter(|name| !name.is_empty())
        .collect()
}

/// The sha256 that `/info/NAME` (body `info`) records for `file_name`, if a
/// line's version (with its platform) makes exactly that file name.
pub fn checksum_for(name: &str, info: &str, file_name: &str) -> Option<String> {
    let stem = file_name.strip_suffix(".gem")?;
    let version = stem.strip_prefix(name)?.strip_prefix('-')?;
    for line in info.lines() {
        // `VERSION[-PLATFORM] DEPS|REQS`, REQS being `checksum:HEX,ruby:...`.
        let Some((field, rest)) = line.split_once(' ') else {
            continue;
        };
        if field != version {
            continue;
        }
        let reqs = rest.rsplit_once('|').map(|(_, r)| r).unwrap_or(rest);
        for req in reqs.split(',') {
            if let Some(hex) = req.trim().strip_prefix("checksum:") {
                let hex = hex.trim().to_ascii_lowercase();
                if hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Some(hex);
                }
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const INFO: &str = "---\n\
        0.1.0 |checksum:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa,ruby:>= 2.0\n\
        1.0.0 dep:>= 0.1&< 1|checksum:BBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB\n\
        1.0.0-x86_64-linux |checksum:cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc\n";

    #[test]
    fn lines_match_whole_file_names() {
        assert_eq!(
            checksum_for("nokogiri", INFO, "nokogiri-0.1.0.gem").unwrap(),
            "a".repeat(64)
        );
        assert_eq!(
            checksum_for("nokogiri", INFO, "nokogiri-1.0.0.gem").unwrap(),
            "b".repeat(64)
        );
        assert_eq!(
            checksum_for("nokogiri", INFO, "nokogiri-1.0.0-x86_64-linux.gem").unwrap(),
            "c".repeat(64)
        );
        assert_eq!(checksum_for("nokogiri", INFO, "nokogiri-2.0.0.gem"), None);
        assert_eq!(checksum_for("noko", INFO, "nokogiri-1.0.0.gem"), None);
    }

    #[test]
    fn newer_fields_beside_the_checksum_do_not_matter() {
        let info = "---\n\
            0.1.0 |checksum:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa,created_at:2024-01-02T03:04:05Z\n\
            0.2.0 dep:>= 1|created_at:2024-01-02T03:04:05.678Z,checksum:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb,ruby:>= 2.7\n";
        assert_eq!(
            checksum_for("x", info, "x-0.1.0.gem").unwrap(),
            "a".repeat(64)
        );
        assert_eq!(
            checksum_for("x", info, "x-0.2.0.gem").unwrap(),
            "b".repeat(64)
        );
    }

    #[test]
    fn candidates_are_every_dash_prefix() {
        assert_eq!(
            candidate_names("net-http-0.1.0-java.gem"),
            vec!["net", "net-http", "net-http-0.1.0"]
        );
        assert!(candidate_names("x.tar.gz").is_empty());
    }
}
