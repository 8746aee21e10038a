//! Build requirements (`build-system.requires` of an sdist's
//! pyproject.toml): read with PEP 517's default, bounded, and checked to name
//! projects on the index and nothing else, so that pip, fetching them, can
//! be sent nowhere but the cache. Pure: no I/O.

use crate::mount::pypi::normalize_name;

/// PEP 517's default when an sdist has no `[build-system]`.
const DEFAULT_REQUIRES: [&str; 2] = ["setuptools>=40.8.0", "wheel"];
/// Bounds on `build-system.requires`, which comes from the untrusted sdist.
const MAX_REQUIREMENTS: usize = 64;
const MAX_REQUIREMENT_LEN: usize = 512;

/// `build-system.requires` of a pyproject.toml (`None`: the sdist has none),
/// PEP 517's default when there is no `[build-system]`, and `wheel` added
/// beside setuptools: setuptools before 70.1 asks for it through
/// `get_requires_for_build_wheel`, which cannot be asked before the build.
pub(super) fn build_requires(pyproject: Option<&str>) -> Result<Vec<String>, String> {
    let default = || DEFAULT_REQUIRES.iter().map(|s| s.to_string()).collect();
    let Some(text) = pyproject else {
        return Ok(default());
    };
    let table: toml::Table =
        toml::from_str(text).map_err(|e| format!("pyproject.toml: {}", e.message()))?;
    let Some(build_system) = table.get("build-system") else {
        return Ok(default());
    };
    let requires = build_system
        .as_table()
        .ok_or("pyproject.toml: build-system is not a table")?
        .get("requires")
        .ok_or("pyproject.toml: build-system has no requires (PEP 518)")?
        .as_array()
        .ok_or("pyproject.toml: build-system.requires is not a list")?;
    if requires.len() > MAX_REQUIREMENTS {
        return Err(format!(
            "pyproject.toml: more than {MAX_REQUIREMENTS} build requirements"
        ));
    }
    let mut out = Vec::new();
    for requirement in requires {
        let requirement = requirement
            .as_str()
            .ok_or("pyproject.toml: build-system.requires holds a non-string")?
            .trim();
        if let Err(why) = check_requirement(requirement) {
            return Err(format!(
                "pyproject.toml: build requirement {requirement:?} {why}; builds fetch \
                 their requirements by name from the cache's index, and from nowhere else"
            ));
        }
        out.push(requirement.to_string());
    }
    let named = |name: &str| out.iter().any(|r| requirement_name(r) == name);
    if named("setuptools") && !named("wheel") {
        out.push("wheel".to_string());
    }
    Ok(out)
}

/// Checks that a build requirement names a project on the index and nothing
/// else: PEP 508's `name [extras] [version specifiers] [; marker]`, never its
/// `name @ URL` form, a bare URL or path, a VCS URL or a pip option (which
/// pip would follow to an address no one allowed). Says why not.
///
/// A subset of PEP 508 checked here by hand: the specifiers are left to
/// pip, and only what could point pip elsewhere needs to be told apart.
fn check_requirement(requirement: &str) -> Result<(), &'static str> {
    if requirement.is_empty()
        || requirement.len() > MAX_REQUIREMENT_LEN
        || requirement.chars().any(char::is_control)
    {
        return Err("is empty, too long or holds control characters");
    }
    if requirement.starts_with('-') {
        return Err("is a pip option, not a requirement");
    }
    if requirement.contains("://") {
        return Err("is a URL (a direct reference), not a project on the index");
    }
    // The marker (after `;`) is evaluated by pip against the interpreter and
    // names no place: outside its quoted values, only names, operators and
    // parentheses. Everything before it must be a plain requirement.
    let (head, marker) = requirement.split_once(';').unwrap_or((requirement, ""));
    if head.contains('@') || head.contains(':') {
        return Err("is a URL (a direct reference), not a project on the index");
    }
    let mut quote = None;
    for c in marker.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '\'' | '"') => quote = Some(c),
            (None, c)
                if c.is_ascii_alphanumeric()
                    || c.is_ascii_whitespace()
                    || "_.()<>=!~".contains(c) => {}
            (None, _) => return Err("has a marker that is more than a condition"),
        }
    }
    let name_end = head
        .find(|c: char| !(c.is_ascii_alphanumeric() || "-_.".contains(c)))
        .unwrap_or(head.len());
    let name = &head[..name_end];
    let plain_name = name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric());
    if !plain_name {
        return Err("does not start with a project name (a path or a VCS URL?)");
    }
    let mut rest = head[name_end..].trim_start();
    if let Some(extras) = rest.strip_prefix('[') {
        let (inside, after) = extras.split_once(']').ok_or("has unclosed extras")?;
        let names_only = inside.split(',').all(|e| {
            e.trim()
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        });
        if !names_only {
            return Err("has extras that are not names");
        }
        rest = after.trim_start();
    }
    let spec = rest
        .strip_prefix('(')
        .and_then(|s| s.strip_suffix(')'))
        .unwrap_or(rest);
    let versions_only = spec
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c.is_ascii_whitespace() || "<>=!~.,*+_-".contains(c));
    if !versions_only
        || (!spec.trim().is_empty() && !spec.trim_start().starts_with(['<', '>', '=', '!', '~']))
    {
        return Err("has more than a name, extras and version specifiers");
    }
    if spec.contains(" -") || spec.contains(",-") {
        return Err("holds a pip option");
    }
    Ok(())
}

/// The normalised project name a requirement string starts with.
fn requirement_name(requirement: &str) -> String {
    let end = requirement
        .find(|c: char| !(c.is_ascii_alphanumeric() || "-_.".contains(c)))
        .unwrap_or(requirement.len());
    normalize_name(&requirement[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requirements_name_projects_and_nothing_else() {
        for ok in [
            "setuptools",
            "setuptools>=40.8.0",
            "flit_core >=3.2,<4",
            "Cython (>=0.29.21)",
            "pkg[extra, other]==1.0.post1",
            "hatchling~=1.0",
            "numpy>=1.0; python_version >= '3.8' and platform_machine != \"arm-64\"",
            "scikit-build-core>=0.4",
        ] {
            assert_eq!(check_requirement(ok), Ok(()), "{ok}");
        }
        for bad in [
            "x @ http://127.0.0.1:9/x.whl",
            "x@https://h/x.zip",
            "x @ file:///tmp/x.whl",
            "x[y] @ git+https://h/x.git",
            "git+https://h/x.git#egg=x",
            "https://h/x-1.0-py3-none-any.whl",
            "./x",
            "../x",
            "/tmp/x",
            "~/x",
            "C:x",
            "--index-url=http://h/",
            "-i http://h/",
            "x --extra-index-url http://h/",
            "x -f h",
            "x==1 --hash=sha256:00",
            "x; python_version > '3' --index-url h",
            "x y",
            "",
        ] {
            assert!(check_requirement(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn build_requirements_from_pyproject() {
        assert_eq!(build_requires(None).unwrap(), DEFAULT_REQUIRES);
        assert_eq!(
            build_requires(Some("[project]\nname = 'x'\n")).unwrap(),
            DEFAULT_REQUIRES
        );
        assert_eq!(
            build_requires(Some(
                "[build-system]\nrequires = ['flit_core >=3.2,<4']\nbuild-backend = 'flit_core.buildapi'\n"
            ))
            .unwrap(),
            vec!["flit_core >=3.2,<4"]
        );
        assert_eq!(
            build_requires(Some("[build-system]\nrequires = ['Setuptools>=61']\n")).unwrap(),
            vec!["Setuptools>=61", "wheel"]
        );
        assert_eq!(
            build_requires(Some(
                "[build-system]\nrequires = ['setuptools', 'wheel>0.3']\n"
            ))
            .unwrap(),
            vec!["setuptools", "wheel>0.3"]
        );
        for bad in [
            "[build-system]\nbuild-backend = 'x'\n",
            "[build-system]\nrequires = 'setuptools'\n",
            "[build-system]\nrequires = [1]\n",
            "[build-system]\nrequires = ['--index-url=http://evil/']\n",
            "[build-system]\nrequires = ['x @ http://127.0.0.1:9/x.whl']\n",
            "[build-system]\nrequires = ['git+https://example.invalid/x.git#egg=x']\n",
            "[build-system]\nrequires = ['x; python_version > \"3\" -i http://evil/']\n",
            "[build-system]\nrequires = [\"a\\nb\"]\n",
            "build-system = 3\n",
            "not toml [",
        ] {
            assert!(build_requires(Some(bad)).is_err(), "{bad}");
        }
    }
}
