//! Policy bundles: a directory of `.rego` files with `data.json` files and an optional
//! `.manifest`, or the same packed as an OPA bundle `.tar.gz`; and the default SARK
//! bundle, embedded in the binary from `policies/`.
//!
//! Loading only reads and checks the files (JSON, manifest, limits). Compiling, which
//! parses every module and compiles every entrypoint, is [`crate::eval::CompiledBundle`].
//!
//! Layout, as in OPA bundles: a `data.json` in directory `a/b/` is the document at
//! `data.a.b`; `.manifest` is `{"revision": "...", "roots": [...], "metadata":
//! {"entrypoints": ["data.sark.decision", ...]}}`. Files under `cases/` (`*.yaml`) are the
//! bundle's own decision cases, run by `sark-pdp test`; other files are ignored.

use std::io::Read;
use std::path::Path;
use std::sync::Arc;

use crate::error::BundleError;

/// The entrypoints SARK's callers use, compiled when a manifest names none.
pub const DEFAULT_ENTRYPOINTS: &[&str] = &[
    "data.sark.decision",
    "data.mcp.allow",
    "data.mcp.result",
    "data.sark.gateway.allow",
    "data.mcp.gateway.a2a.result",
];

/// The entrypoint that returns SARK's decision document.
pub const DECISION_ENTRYPOINT: &str = "data.sark.decision";

/// Limits on what a bundle may hold, checked before anything is kept in memory.
#[derive(Debug, Clone, Copy)]
pub struct BundleLimits {
    /// Total bytes of all files kept (policies, data, cases).
    pub max_bytes: u64,
    /// Number of files kept.
    pub max_files: usize,
    /// Nesting depth of any data document.
    pub max_data_depth: usize,
    /// Nesting of `[` and `{` in a Rego module (outside strings and comments). regorus's
    /// parser takes time exponential in it (×2 a level: 16 levels ~3 s, 20 over a
    /// minute, found by fuzzing `bundle_dir`); SARK's own policies nest 3 deep.
    pub max_rego_nesting: usize,
}

impl Default for BundleLimits {
    fn default() -> Self {
        BundleLimits {
            max_bytes: 64 << 20,
            max_files: 10_000,
            max_data_depth: 64,
            max_rego_nesting: 12,
        }
    }
}

/// One Rego module of a bundle.
#[derive(Debug, Clone)]
pub struct Module {
    /// Path inside the bundle, e.g. `rbac.rego`; regorus reports errors against it.
    pub path: String,
    pub source: String,
}

/// A case file shipped with the bundle (`cases/*.yaml`).
#[derive(Debug, Clone)]
pub struct CaseFile {
    pub path: String,
    pub text: String,
}

/// A loaded (not yet compiled) bundle.
#[derive(Debug, Clone)]
pub struct Bundle {
    /// Where it came from: a path, or `embedded`. Errors name it.
    pub origin: String,
    /// The manifest's revision; empty string when there is no manifest. Cache keys and
    /// audit records carry it, so answers from an older revision are never served.
    pub revision: Arc<str>,
    pub modules: Vec<Module>,
    /// The merged data document (all `data.json` files at their paths).
    pub data: serde_json::Value,
    /// Entrypoints to compile, as `data.pkg.rule` paths.
    pub entrypoints: Vec<String>,
    pub cases: Vec<CaseFile>,
}

static EMBEDDED: include_dir::Dir<'static> = include_dir::include_dir!("$CARGO_MANIFEST_DIR/../policies");

impl Bundle {
    /// The default SARK bundle compiled into this binary from `policies/`.
    ///
    /// # Errors
    /// Only if the embedded files are malformed, which the test suite rules out.
    pub fn embedded() -> Result<Bundle, BundleError> {
        let mut files = Vec::new();
        collect_embedded(&EMBEDDED, &mut files);
        Bundle::from_files("embedded", files, BundleLimits::default())
    }

    /// Load a bundle from a directory or an OPA bundle `.tar.gz`.
    ///
    /// # Errors
    /// Unreadable files, malformed JSON or manifest, limits exceeded, no policy.
    pub fn load(path: &Path, limits: BundleLimits) -> Result<Bundle, BundleError> {
        let io = |source| BundleError::Io {
            path: path.to_path_buf(),
            source,
        };
        let meta = std::fs::metadata(path).map_err(io)?;
        let origin = path.display().to_string();
        let files = if meta.is_dir() {
            let mut files = Vec::new();
            let mut total = 0;
            read_dir_files(path, path, &limits, &mut total, &mut files)?;
            files
        } else {
            let file = std::fs::File::open(path).map_err(io)?;
            read_tar_gz(&origin, file, &limits)?
        };
        Bundle::from_files(&origin, files, limits)
    }

    /// A bundle from the bytes of an OPA bundle `.tar.gz` (as a bundle server sends it).
    ///
    /// # Errors
    /// As [`Bundle::load`].
    pub fn from_tar_gz(origin: &str, bytes: &[u8], limits: BundleLimits) -> Result<Bundle, BundleError> {
        let files = read_tar_gz(origin, bytes, &limits)?;
        Bundle::from_files(origin, files, limits)
    }

    /// Build a bundle from `(relative path, bytes)` pairs.
    ///
    /// # Errors
    /// Malformed JSON or manifest, limits exceeded, no policy.
    pub fn from_files(
        origin: &str,
        files: Vec<(String, Vec<u8>)>,
        limits: BundleLimits,
    ) -> Result<Bundle, BundleError> {
        if files.len() > limits.max_files {
            return Err(BundleError::Limit {
                path: origin.to_string(),
                message: format!("more than {} files", limits.max_files),
            });
        }
        let mut modules = Vec::new();
        let mut cases = Vec::new();
        let mut data = serde_json::Value::Object(serde_json::Map::new());
        let mut manifest = None;
        for (rel, bytes) in files {
            let rel = rel.trim_start_matches("./").trim_start_matches('/').to_string();
            let name = rel.rsplit('/').next().unwrap_or(&rel);
            let shown = format!("{origin}/{rel}");
            if name.ends_with(".rego") {
                let source = String::from_utf8(bytes).map_err(|e| BundleError::Parse {
                    path: shown.clone(),
                    message: format!("not UTF-8: {e}"),
                })?;
                if let Some(line) = nesting_past(&source, limits.max_rego_nesting) {
                    return Err(BundleError::Limit {
                        path: shown,
                        message: format!("brackets and braces nest more than {} deep at line {line}", limits.max_rego_nesting),
                    });
                }
                modules.push(Module { path: rel, source });
            } else if name == "data.json" {
                let doc: serde_json::Value = serde_json::from_slice(&bytes).map_err(|e| BundleError::Data {
                    path: shown.clone(),
                    line: e.line(),
                    column: e.column(),
                    message: e.to_string(),
                })?;
                check_depth(&doc, limits.max_data_depth, &shown)?;
                let dir: Vec<&str> = rel
                    .strip_suffix("data.json")
                    .unwrap_or("")
                    .split('/')
                    .filter(|s| !s.is_empty())
                    .collect();
                merge_at(&mut data, &dir, doc, &shown)?;
            } else if rel == ".manifest" {
                manifest = Some(parse_manifest(&shown, &bytes)?);
            } else if rel.starts_with("cases/") && (name.ends_with(".yaml") || name.ends_with(".yml")) {
                let text = String::from_utf8(bytes).map_err(|e| BundleError::Validation {
                    path: shown.clone(),
                    message: format!("not UTF-8: {e}"),
                })?;
                cases.push(CaseFile { path: rel, text });
            }
        }
        if modules.is_empty() {
            return Err(BundleError::Empty {
                path: origin.to_string(),
            });
        }
        modules.sort_by(|a, b| a.path.cmp(&b.path));
        cases.sort_by(|a, b| a.path.cmp(&b.path));
        let (revision, entrypoints) = manifest.unwrap_or_default();
        let entrypoints = match entrypoints {
            Some(list) => list,
            // Without a list, the SARK entrypoints this bundle defines (checked when compiled).
            None => DEFAULT_ENTRYPOINTS
                .iter()
                .filter(|ep| defines_rule(&modules, ep))
                .map(|ep| ep.to_string())
                .collect(),
        };
        if entrypoints.is_empty() {
            return Err(BundleError::Validation {
                path: origin.to_string(),
                message: "no entrypoint: the manifest names none and no module defines one of SARK's (data.sark.decision, data.mcp.allow, …)".into(),
            });
        }
        Ok(Bundle {
            origin: origin.to_string(),
            revision: revision.into(),
            modules,
            data,
            entrypoints,
            cases,
        })
    }

    /// Top-level names the policies read under `data.` that neither the data document nor
    /// any package defines: almost always a typo or a missing `data.json`. A cheap textual
    /// scan, so it only looks at the first segment after `data.`.
    pub fn unresolved_data_roots(&self) -> Vec<(String, String)> {
        let mut roots: Vec<String> = self
            .modules
            .iter()
            .filter_map(|m| package_of(&m.source))
            .filter_map(|p| p.split('.').next().map(str::to_string))
            .collect();
        if let serde_json::Value::Object(map) = &self.data {
            roots.extend(map.keys().cloned());
        }
        let mut missing = Vec::new();
        for m in &self.modules {
            for line in m.source.lines() {
                let code = line.split('#').next().unwrap_or("");
                let mut rest = code;
                while let Some(pos) = rest.find("data.") {
                    let before = rest.get(..pos).and_then(|s| s.chars().last());
                    let after = rest.get(pos + 5..).unwrap_or("");
                    let ident: String = after
                        .chars()
                        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                        .collect();
                    let standalone = !before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.');
                    if standalone && !ident.is_empty() && !roots.contains(&ident) {
                        missing.push((m.path.clone(), format!("data.{ident}")));
                    }
                    rest = after;
                }
            }
        }
        missing.sort();
        missing.dedup();
        missing
    }
}

/// The package a module declares, e.g. `sark.rbac`.
fn package_of(source: &str) -> Option<String> {
    source.lines().find_map(|l| {
        let l = l.trim();
        l.strip_prefix("package ").map(|p| p.trim().to_string())
    })
}

/// Whether some module declares `pkg` and a rule named `rule` for `data.pkg.rule`.
fn defines_rule(modules: &[Module], entrypoint: &str) -> bool {
    let Some(path) = entrypoint.strip_prefix("data.") else {
        return false;
    };
    let Some((pkg, rule)) = path.rsplit_once('.') else {
        return false;
    };
    modules.iter().any(|m| {
        package_of(&m.source).as_deref() == Some(pkg)
            && m.source.lines().any(|l| {
                let l = l.trim_start().strip_prefix("default ").unwrap_or(l.trim_start());
                l.strip_prefix(rule)
                    .is_some_and(|rest| rest.is_empty() || rest.starts_with([' ', '\t', ':', '=', '[', '(', '{']))
            })
    })
}

fn parse_manifest(shown: &str, bytes: &[u8]) -> Result<(String, Option<Vec<String>>), BundleError> {
    let bad = |message: String| BundleError::Manifest {
        path: shown.to_string(),
        message,
    };
    let doc: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| bad(e.to_string()))?;
    let obj = doc.as_object().ok_or_else(|| bad("not a JSON object".into()))?;
    let revision = match obj.get("revision") {
        None => String::new(),
        Some(serde_json::Value::String(s)) => s.clone(),
        Some(_) => return Err(bad("revision must be a string".into())),
    };
    let entrypoints = match obj.get("metadata").and_then(|m| m.get("entrypoints")) {
        None => None,
        Some(serde_json::Value::Array(list)) => Some(
            list.iter()
                .map(|v| {
                    v.as_str()
                        .filter(|s| s.starts_with("data."))
                        .map(str::to_string)
                        .ok_or_else(|| bad(format!("entrypoint {v} is not a \"data.…\" path")))
                })
                .collect::<Result<Vec<_>, _>>()?,
        ),
        Some(_) => return Err(bad("metadata.entrypoints must be an array".into())),
    };
    Ok((revision, entrypoints))
}

fn check_depth(v: &serde_json::Value, max: usize, shown: &str) -> Result<(), BundleError> {
    fn depth(v: &serde_json::Value) -> usize {
        match v {
            serde_json::Value::Array(a) => 1 + a.iter().map(depth).max().unwrap_or(0),
            serde_json::Value::Object(o) => 1 + o.values().map(depth).max().unwrap_or(0),
            _ => 0,
        }
    }
    // serde_json itself refuses nesting past 128, so the recursion is bounded.
    if depth(v) > max {
        return Err(BundleError::Limit {
            path: shown.to_string(),
            message: format!("data nested deeper than {max} levels"),
        });
    }
    Ok(())
}

/// Deep-merge `doc` at `path` into `root`; two files that set the same leaf conflict.
fn merge_at(root: &mut serde_json::Value, path: &[&str], doc: serde_json::Value, shown: &str) -> Result<(), BundleError> {
    let conflict = |key: &str| BundleError::Validation {
        path: shown.to_string(),
        message: format!("data conflict at {key}"),
    };
    let mut node = root;
    for seg in path {
        let obj = node.as_object_mut().ok_or_else(|| conflict(seg))?;
        node = obj
            .entry(seg.to_string())
            .or_insert_with(|| serde_json::Value::Object(serde_json::Map::new()));
    }
    fn merge(dst: &mut serde_json::Value, src: serde_json::Value, at: &str) -> Result<(), String> {
        match (dst, src) {
            (serde_json::Value::Object(d), serde_json::Value::Object(s)) => {
                for (k, v) in s {
                    match d.get_mut(&k) {
                        Some(existing) => merge(existing, v, &format!("{at}.{k}"))?,
                        None => {
                            d.insert(k, v);
                        }
                    }
                }
                Ok(())
            }
            _ => Err(at.to_string()),
        }
    }
    merge(node, doc, &format!("data.{}", path.join("."))).map_err(|at| conflict(&at))
}

fn collect_embedded(dir: &include_dir::Dir<'static>, out: &mut Vec<(String, Vec<u8>)>) {
    for f in dir.files() {
        out.push((f.path().to_string_lossy().into_owned(), f.contents().to_vec()));
    }
    for d in dir.dirs() {
        collect_embedded(d, out);
    }
}

fn read_dir_files(
    root: &Path,
    dir: &Path,
    limits: &BundleLimits,
    total: &mut u64,
    out: &mut Vec<(String, Vec<u8>)>,
) -> Result<(), BundleError> {
    let io = |p: &Path| {
        let p = p.to_path_buf();
        move |source| BundleError::Io { path: p, source }
    };
    let mut entries = std::fs::read_dir(dir)
        .map_err(io(dir))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(io(dir))?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let path = entry.path();
        let ty = entry.file_type().map_err(io(&path))?;
        if ty.is_dir() {
            read_dir_files(root, &path, limits, total, out)?;
        } else if ty.is_file() && wanted(&path.to_string_lossy()) {
            let len = entry.metadata().map_err(io(&path))?.len();
            account(total, len, out.len(), limits, &root.display().to_string())?;
            let bytes = std::fs::read(&path).map_err(io(&path))?;
            let rel = path.strip_prefix(root).unwrap_or(&path).to_string_lossy().into_owned();
            out.push((rel, bytes));
        }
    }
    Ok(())
}

/// Files a bundle keeps; the rest (READMEs, editor files) are skipped unread.
fn wanted(path: &str) -> bool {
    path.ends_with(".rego")
        || path.ends_with("data.json")
        || path.ends_with(".manifest")
        || path.ends_with(".yaml")
        || path.ends_with(".yml")
}

fn account(total: &mut u64, len: u64, files: usize, limits: &BundleLimits, origin: &str) -> Result<(), BundleError> {
    *total = total.saturating_add(len);
    if *total > limits.max_bytes || files >= limits.max_files {
        return Err(BundleError::Limit {
            path: origin.to_string(),
            message: format!(
                "bundle exceeds {} bytes or {} files",
                limits.max_bytes, limits.max_files
            ),
        });
    }
    Ok(())
}

fn read_tar_gz(origin: &str, file: impl Read, limits: &BundleLimits) -> Result<Vec<(String, Vec<u8>)>, BundleError> {
    let io = |source| BundleError::Io {
        path: origin.into(),
        source,
    };
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(file));
    let mut out = Vec::new();
    let mut total = 0;
    for entry in archive.entries().map_err(io)? {
        let entry = entry.map_err(io)?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let rel = entry.path().map_err(io)?.to_string_lossy().into_owned();
        if !wanted(&rel) {
            continue;
        }
        let len = entry.header().size().map_err(io)?;
        account(&mut total, len, out.len(), limits, origin)?;
        // The header's size was checked above; `take` guards against a lying header.
        let mut bytes = Vec::new();
        entry.take(len).read_to_end(&mut bytes).map_err(io)?;
        out.push((rel, bytes));
    }
    Ok(out)
}

/// The line where `[` and `{` first nest deeper than `max` in Rego source, skipping
/// comments, strings (with escapes) and raw strings; `None` if they never do.
fn nesting_past(source: &str, max: usize) -> Option<usize> {
    let (mut depth, mut line) = (0usize, 1usize);
    let mut chars = source.chars();
    while let Some(c) = chars.next() {
        match c {
            '\n' => line += 1,
            '#' if chars.by_ref().any(|c| c == '\n') => line += 1,
            '"' => {
                while let Some(c) = chars.next() {
                    match c {
                        '\\' => {
                            chars.next();
                        }
                        '"' => break,
                        '\n' => line += 1,
                        _ => {}
                    }
                }
            }
            '`' => {
                for c in chars.by_ref() {
                    match c {
                        '`' => break,
                        '\n' => line += 1,
                        _ => {}
                    }
                }
            }
            '[' | '{' => {
                depth += 1;
                if depth > max {
                    return Some(line);
                }
            }
            ']' | '}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    None
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    fn files(list: &[(&str, &str)]) -> Vec<(String, Vec<u8>)> {
        list.iter().map(|(p, s)| (p.to_string(), s.as_bytes().to_vec())).collect()
    }

    #[test]
    fn data_files_merge_at_their_directories() {
        let b = Bundle::from_files(
            "t",
            files(&[
                ("p.rego", "package sark\ndecision := {}\n"),
                ("data.json", r#"{"a": {"x": 1}}"#),
                ("a/b/data.json", r#"{"y": 2}"#),
                (".manifest", r#"{"revision": "r7"}"#),
            ]),
            BundleLimits::default(),
        )
        .unwrap();
        assert_eq!(b.data, serde_json::json!({"a": {"x": 1, "b": {"y": 2}}}));
        assert_eq!(&*b.revision, "r7");
        assert_eq!(b.entrypoints, vec!["data.sark.decision".to_string()]);
    }

    #[test]
    fn conflicting_data_is_refused() {
        let err = Bundle::from_files(
            "t",
            files(&[
                ("p.rego", "package sark\ndecision := {}\n"),
                ("data.json", r#"{"a": {"x": 1}}"#),
                ("a/data.json", r#"{"x": 2}"#),
            ]),
            BundleLimits::default(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("data conflict at data.a.x"), "{err}");
    }

    #[test]
    fn bad_json_names_file_line_and_column() {
        let err = Bundle::from_files(
            "bundle",
            files(&[("p.rego", "package sark\ndecision := {}\n"), ("data.json", "{\n  \"a\": ,\n}")]),
            BundleLimits::default(),
        )
        .unwrap_err();
        assert!(err.to_string().starts_with("bundle/data.json:2:8: invalid JSON"), "{err}");
        assert_eq!(err.wire_code(), 2003);
    }

    #[test]
    fn manifest_entrypoints_and_empty_bundles() {
        let b = Bundle::from_files(
            "t",
            files(&[
                ("x.rego", "package x\nallow := true\n"),
                (".manifest", r#"{"revision": "1", "metadata": {"entrypoints": ["data.x.allow"]}}"#),
            ]),
            BundleLimits::default(),
        )
        .unwrap();
        assert_eq!(b.entrypoints, vec!["data.x.allow".to_string()]);
        let err = Bundle::from_files("t", files(&[("data.json", "{}")]), BundleLimits::default()).unwrap_err();
        assert!(matches!(err, BundleError::Empty { .. }));
        let err = Bundle::from_files("t", files(&[("x.rego", "package x\nallow := true\n")]), BundleLimits::default())
            .unwrap_err();
        assert!(err.to_string().contains("no entrypoint"), "{err}");
    }

    #[test]
    fn limits_are_enforced() {
        let limits = BundleLimits {
            max_data_depth: 2,
            ..BundleLimits::default()
        };
        let err = Bundle::from_files(
            "t",
            files(&[("p.rego", "package sark\ndecision := {}\n"), ("data.json", r#"{"a": {"b": {"c": 1}}}"#)]),
            limits,
        )
        .unwrap_err();
        assert!(matches!(err, BundleError::Limit { .. }), "{err}");
        let limits = BundleLimits {
            max_files: 1,
            ..BundleLimits::default()
        };
        let err = Bundle::from_files("t", files(&[("a.rego", ""), ("b.rego", "")]), limits).unwrap_err();
        assert!(matches!(err, BundleError::Limit { .. }), "{err}");
    }

    #[test]
    fn rego_nested_past_the_limit_is_refused_before_the_parser_sees_it() {
        let nested = |n: usize, open: &str, close: &str| format!("package sark\n\n# {} not counted\ndecision := {{\"allow\": false, \"x\": {}1{}}}\n", "[".repeat(40), open.repeat(n), close.repeat(n));
        // 1 for the decision object, n more: 11 + 1 = 12 is the limit.
        for ok in [nested(11, "[", "]"), nested(5, "[{", "}]") + "\ny := \"[[[[[[[[[[[[[[[[\"\nz := `{{{{{{{{{{{{{{{{`\n"] {
            Bundle::from_files("t", files(&[("p.rego", &ok)]), BundleLimits::default()).unwrap();
        }
        // The fuzzer's find: 28 levels would take regorus hours.
        for bad in [nested(12, "[", "]"), nested(14, "[{", "}]"), nested(28, "[", "]")] {
            let err = Bundle::from_files("t", files(&[("p.rego", &bad)]), BundleLimits::default()).unwrap_err();
            assert!(matches!(&err, BundleError::Limit { message, .. } if message.contains("nest more than 12 deep at line 4")), "{err}");
        }
    }

    #[test]
    fn tar_gz_bundles_load_like_directories() {
        let mut builder = tar::Builder::new(flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast()));
        for (path, body) in [
            ("/sark/p.rego", "package sark\ndecision := {\"allow\": false}\n"),
            ("/data.json", r#"{"sark_config": {"k": 1}}"#),
            ("/.manifest", r#"{"revision": "tgz-1"}"#),
        ] {
            let mut h = tar::Header::new_gnu();
            h.set_size(body.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            builder.append_data(&mut h, path.trim_start_matches('/'), body.as_bytes()).unwrap();
        }
        let gz = builder.into_inner().unwrap().finish().unwrap();
        let dir = std::env::temp_dir().join(format!("pdp-bundle-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("bundle.tar.gz");
        std::fs::write(&path, gz).unwrap();
        let b = Bundle::load(&path, BundleLimits::default()).unwrap();
        assert_eq!(&*b.revision, "tgz-1");
        assert_eq!(b.modules.len(), 1);
        assert_eq!(b.data, serde_json::json!({"sark_config": {"k": 1}}));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn unresolved_data_roots_are_reported() {
        let b = Bundle::from_files(
            "t",
            files(&[
                ("p.rego", "package sark\ndecision := data.sark_config.x\ny := data.nope.z # data.comment\n"),
                ("data.json", r#"{"sark_config": {"x": 1}}"#),
            ]),
            BundleLimits::default(),
        )
        .unwrap();
        assert_eq!(b.unresolved_data_roots(), vec![("p.rego".to_string(), "data.nope".to_string())]);
    }

    #[test]
    fn embedded_bundle_loads() {
        let b = Bundle::embedded().unwrap();
        assert!(!b.modules.is_empty());
        assert!(!b.revision.is_empty());
        assert!(b.entrypoints.iter().any(|e| e == DECISION_ENTRYPOINT));
    }
}
