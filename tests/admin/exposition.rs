//! A strict reader of the OpenMetrics text `/metrics` serves: a malformed
//! line fails the test, and samples are looked up exactly as exposed.

use std::collections::BTreeMap;

/// One `/metrics` scrape: sample (`name{labels}`, exactly as exposed) → value.
#[derive(Debug, PartialEq)]
pub struct Scrape(BTreeMap<String, f64>);

impl Scrape {
    pub fn get(&self, sample: &str) -> f64 {
        *self
            .0
            .get(sample)
            .unwrap_or_else(|| panic!("no sample {sample} in {:#?}", self.0))
    }

    pub fn opt(&self, sample: &str) -> Option<f64> {
        self.0.get(sample).copied()
    }

    /// The sum of every sample of `name` whose labels include each of
    /// `labels` (PromQL's `sum(name{k="v",…})`); panics if there is none.
    pub fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let matching: Vec<f64> = self
            .0
            .iter()
            .filter(|(sample, _)| {
                let (n, rest) = sample.split_once('{').unwrap_or((sample, ""));
                n == name
                    && labels.iter().all(|(k, v)| {
                        rest.trim_end_matches('}')
                            .split(',')
                            .any(|pair| pair == format!("{k}=\"{v}\""))
                    })
            })
            .map(|(_, v)| *v)
            .collect();
        assert!(
            !matching.is_empty(),
            "no sample {name}{labels:?} in {:#?}",
            self.0
        );
        matching.iter().sum()
    }
}

/// Parses the OpenMetrics text strictly enough that a malformed line fails:
/// every sample belongs to a family declared by `# TYPE`, names and labels
/// have the exposition's syntax, values are numbers, and `# EOF` ends it.
pub fn parse_exposition(text: &str) -> Scrape {
    let mut families = Vec::new();
    let mut samples = BTreeMap::new();
    let mut lines = text.lines().peekable();
    let name_ok = |n: &str| {
        !n.is_empty()
            && !n.starts_with(|c: char| c.is_ascii_digit())
            && n.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
    };
    while let Some(line) = lines.next() {
        if line == "# EOF" {
            assert!(lines.peek().is_none(), "text after # EOF");
            return Scrape(samples);
        }
        if let Some(meta) = line.strip_prefix("# ") {
            let mut parts = meta.splitn(3, ' ');
            let (kind, name) = (parts.next().unwrap(), parts.next().expect("metadata name"));
            assert!(name_ok(name), "bad family name in {line:?}");
            match kind {
                "TYPE" => {
                    let t = parts.next().expect("a type");
                    assert!(
                        ["counter", "gauge", "histogram", "info", "unknown"].contains(&t),
                        "{line:?}"
                    );
                    families.push(name.to_string());
                }
                "HELP" | "UNIT" => {}
                _ => panic!("unknown metadata line {line:?}"),
            }
            continue;
        }
        let (sample, value) = line.rsplit_once(' ').expect("sample and value");
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("bad value in {line:?}"));
        let name = sample.split('{').next().unwrap();
        assert!(name_ok(name), "bad sample name in {line:?}");
        if let Some(labels) = sample.strip_prefix(name) {
            if !labels.is_empty() {
                let inner = labels
                    .strip_prefix('{')
                    .and_then(|l| l.strip_suffix('}'))
                    .unwrap_or_else(|| panic!("bad labels in {line:?}"));
                for pair in inner.split("\",") {
                    let (k, v) = pair.split_once("=\"").expect("label=\"value\"");
                    assert!(name_ok(k), "bad label name in {line:?}");
                    assert!(!v.trim_end_matches('"').contains('"'), "{line:?}");
                }
            }
        }
        assert!(
            families.iter().any(|f| name.starts_with(f.as_str())),
            "sample {name} has no # TYPE"
        );
        assert!(
            samples.insert(sample.to_string(), value).is_none(),
            "duplicate sample {sample}"
        );
    }
    panic!("exposition does not end with # EOF:\n{text}");
}
