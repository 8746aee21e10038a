//! Peak heap memory of rewriting a 20 MB packument (`mount::npm::rewrite`),
//! measured with a counting global allocator: the rewrite may hold the input,
//! the output and a small record per version, never a parsed tree or several
//! copies. The same document parsed into a `serde_json::Value` and written
//! back (the obvious implementation) is measured beside it for comparison.
//! One test in this binary, so no other test allocates meanwhile.

use bytes::Bytes;
use package_cache::digest::Digest;
use package_cache::mount::npm;
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use url::Url;

struct Counting;

static CURRENT: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is forwarded to the system allocator unchanged; the
// counters only observe sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let ptr = unsafe { System.alloc(layout) };
        if !ptr.is_null() {
            let now = CURRENT.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(now, Ordering::Relaxed);
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        CURRENT.fetch_sub(layout.size(), Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let new = unsafe { System.realloc(ptr, layout, new_size) };
        if !new.is_null() {
            if new_size > layout.size() {
                let grow = new_size - layout.size();
                let now = CURRENT.fetch_add(grow, Ordering::Relaxed) + grow;
                PEAK.fetch_max(now, Ordering::Relaxed);
            } else {
                CURRENT.fetch_sub(layout.size() - new_size, Ordering::Relaxed);
            }
        }
        new
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Bytes allocated at the peak of `f`, above what was allocated before it.
fn peak_during<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let before = CURRENT.load(Ordering::Relaxed);
    PEAK.store(before, Ordering::Relaxed);
    let out = f();
    (out, PEAK.load(Ordering::Relaxed) - before)
}

/// A packument shaped like a popular package's: thousands of versions with
/// dependencies, scripts, signatures and a long `time` map.
fn packument(target: usize) -> Vec<u8> {
    let mut versions = String::new();
    let mut times = String::from(r#""created":"2015-01-01T00:00:00.000Z""#);
    let mut n = 0;
    while versions.len() + times.len() < target {
        let v = format!("{}.{}.{}", n / 400, (n / 20) % 20, n % 20);
        if n > 0 {
            versions.push(',');
        }
        versions.push_str(&format!(
            r#""{v}":{{"name":"big-package","version":"{v}","description":"A package with a very long history of releases, version {v}","main":"lib/index.js","scripts":{{"test":"mocha --reporter spec test/*.js","build":"tsc -p ."}},"repository":{{"type":"git","url":"git+https://git.example/big/big-package.git"}},"keywords":["big","package","test","fixture"],"author":{{"name":"Someone","email":"someone@example.org"}},"license":"MIT","dependencies":{{"left-pad":"^1.3.0","lodash":"^4.17.21","debug":"^4.3.4","ms":"^2.1.3"}},"devDependencies":{{"mocha":"^10.0.0","typescript":"^5.0.0"}},"engines":{{"node":">=14"}},"_id":"big-package@{v}","_nodeVersion":"20.11.0","_npmVersion":"10.2.4","dist":{{"integrity":"sha512-{sig}","shasum":"{sha1}","tarball":"https://registry.example/big-package/-/big-package-{v}.tgz","fileCount":42,"unpackedSize":123456,"signatures":[{{"keyid":"SHA256:jl3bwswu80PjjokCgh0o2w5c2U4LhQAE57gj9cz1kzA","sig":"MEUCIQDd{sig12}"}}]}},"_npmUser":{{"name":"someone","email":"someone@example.org"}},"maintainers":[{{"name":"someone","email":"someone@example.org"}}],"directories":{{}},"_hasShrinkwrap":false}}"#,
            sig = "A".repeat(86) + "==",
            sha1 = "0".repeat(40),
            sig12 = "B".repeat(60),
        ));
        times.push_str(&format!(r#","{v}":"2020-01-01T00:00:00.000Z""#));
        n += 1;
    }
    format!(
        r#"{{"_id":"big-package","_rev":"1234-abcdef","name":"big-package","dist-tags":{{"latest":"1.0.0"}},"versions":{{{versions}}},"time":{{{times}}},"readme":"{readme}"}}"#,
        readme = "x".repeat(1000)
    )
    .into_bytes()
}

#[test]
fn a_20_mb_packument_is_rewritten_without_copies() {
    let body = Bytes::from(packument(20 << 20));
    let len = body.len();
    assert!(len >= 20 << 20, "{len}");
    let page = Url::parse("https://registry.example/big-package").expect("url");
    let map = |url: &Url| -> Option<String> {
        (url.host_str()? == "registry.example").then(|| url.path().to_string())
    };

    let (out, peak) = peak_during(|| {
        npm::rewrite(body.clone(), &page, "http://cache.example:4000/npm", &map).expect("rewrites")
    });
    let versions = out.digests.len();
    assert!(versions > 5_000, "{versions}");
    assert!(matches!(out.digests[0].1, Digest::Sha512(_)));
    assert_eq!(out.unmapped, 0);
    let expected_len = len + versions * "http://cache.example:4000/npm".len()
        - versions * "https://registry.example".len();
    assert_eq!(out.body.len(), expected_len);
    drop(out);

    let (round_trip, tree_peak) = peak_during(|| {
        let value: serde_json::Value = serde_json::from_slice(&body).expect("json");
        serde_json::to_vec(&value).expect("serialises")
    });
    drop(round_trip);

    let mb = |bytes: usize| bytes as f64 / (1 << 20) as f64;
    println!(
        "packument {:.1} MB, {versions} versions: rewrite peak {:.1} MB above the input ({:.2}x the document); serde_json::Value round trip {:.1} MB ({:.2}x)",
        mb(len),
        mb(peak),
        peak as f64 / len as f64,
        mb(tree_peak),
        tree_peak as f64 / len as f64,
    );
    // The output (one document) plus per-version records: well under two documents.
    assert!(
        peak < len + len / 4,
        "rewrite peak {peak} bytes for a {len}-byte document"
    );
}
