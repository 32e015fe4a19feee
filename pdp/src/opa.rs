//! The real OPA engine (Go, v1.20.2), loaded at run time from `libopabridge.so` (shipped
//! inside the PyPI wheel `opa-golib-python-bindings` 0.4.4; `scripts/fetch-opa.sh` puts it
//! in `.opa/`). It is our reference for decisions and our peer for speed; the server never
//! uses it.
//!
//! The library is a Go `c-shared` object: it is loaded once per process and never
//! unloaded (unloading a Go runtime is not supported).
#![allow(unsafe_code)]

use std::ffi::{CStr, CString, c_char, c_int};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use crate::bundle::Bundle;

/// The environment variable that names the library, overriding the search.
pub const LIB_ENV: &str = "SARK_PDP_OPA_LIB";

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpaError {
    #[error("cannot load the OPA engine from {path}: {message} (run scripts/fetch-opa.sh, or set {LIB_ENV})")]
    Load { path: String, message: String },
    #[error("OPA {code}: {message}")]
    Engine { code: String, message: String },
    #[error("OPA returned a malformed envelope: {0}")]
    Envelope(String),
    #[error("argument contains a NUL byte")]
    Nul,
}

type NewFn = unsafe extern "C" fn() -> u64;
type DestroyFn = unsafe extern "C" fn(u64);
type FreeFn = unsafe extern "C" fn(*mut c_char);
type AddFn = unsafe extern "C" fn(u64, *const c_char, *const c_char) -> *mut c_char;
type EvalFn = unsafe extern "C" fn(u64, *const c_char, *const c_char, c_int, c_int) -> *mut c_char;

/// The loaded library's entry points.
#[derive(Debug)]
struct Lib {
    new: NewFn,
    destroy: DestroyFn,
    free: FreeFn,
    add_policy: AddFn,
    add_data: AddFn,
    eval_document: EvalFn,
}

static LIB: OnceLock<Result<Lib, String>> = OnceLock::new();

/// Where the library is: `$SARK_PDP_OPA_LIB`, else `.opa/libopabridge.so` in the current
/// directory or any parent (so tests and benches find it from any crate directory).
pub fn default_lib_path() -> PathBuf {
    if let Some(p) = std::env::var_os(LIB_ENV) {
        return PathBuf::from(p);
    }
    let start = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
    for dir in start.ancestors() {
        let candidate = dir.join(".opa/libopabridge.so");
        if candidate.exists() {
            return candidate;
        }
    }
    start.join(".opa/libopabridge.so")
}

fn load(path: &Path) -> Result<Lib, String> {
    // SAFETY: loading runs the Go runtime's initialisers, which is what this library is
    // built for (c-shared); the symbols below have the C signatures its header declares
    // (see DEVELOPERS.md and the wheel's ctypes bindings), and the library is never unloaded
    // (it is leaked), so the function pointers stay valid for the process's life.
    unsafe {
        let lib = libloading::Library::new(path).map_err(|e| e.to_string())?;
        let lib: &'static libloading::Library = Box::leak(Box::new(lib));
        macro_rules! sym {
            ($name:literal, $ty:ty) => {
                *lib.get::<$ty>($name).map_err(|e| e.to_string())?
            };
        }
        Ok(Lib {
            new: sym!(b"OpaNew\0", NewFn),
            destroy: sym!(b"OpaDestroy\0", DestroyFn),
            free: sym!(b"OpaFreeString\0", FreeFn),
            add_policy: sym!(b"OpaAddPolicy\0", AddFn),
            add_data: sym!(b"OpaAddData\0", AddFn),
            eval_document: sym!(b"OpaEvalDocument\0", EvalFn),
        })
    }
}

fn lib() -> Result<&'static Lib, OpaError> {
    let path = default_lib_path();
    LIB.get_or_init(|| load(&path))
        .as_ref()
        .map_err(|message| OpaError::Load {
            path: path.display().to_string(),
            message: message.clone(),
        })
}

/// One OPA engine instance (policies + data).
#[derive(Debug)]
pub struct OpaEngine {
    lib: &'static Lib,
    handle: u64,
}

fn cstring(s: &str) -> Result<CString, OpaError> {
    CString::new(s).map_err(|_| OpaError::Nul)
}

impl OpaEngine {
    /// A new, empty engine.
    ///
    /// # Errors
    /// The library cannot be loaded.
    pub fn new() -> Result<OpaEngine, OpaError> {
        let lib = lib()?;
        // SAFETY: OpaNew takes no arguments and returns a handle.
        let handle = unsafe { (lib.new)() };
        Ok(OpaEngine { lib, handle })
    }

    /// An engine holding a bundle's modules and data.
    ///
    /// # Errors
    /// The library cannot be loaded, or OPA refuses a module or the data.
    pub fn from_bundle(bundle: &Bundle) -> Result<OpaEngine, OpaError> {
        let e = OpaEngine::new()?;
        for m in &bundle.modules {
            e.add_policy(&m.path, &m.source)?;
        }
        e.add_data("", &bundle.data.to_string())?;
        Ok(e)
    }

    /// Copy and free an envelope, returning its JSON; an `error` member becomes an error.
    fn envelope(&self, ptr: *mut c_char) -> Result<serde_json::Value, OpaError> {
        if ptr.is_null() {
            return Err(OpaError::Envelope("NULL".into()));
        }
        // SAFETY: a non-NULL return is a NUL-terminated string the library allocated;
        // it is copied before being handed back to OpaFreeString exactly once.
        let text = unsafe {
            let s = CStr::from_ptr(ptr).to_string_lossy().into_owned();
            (self.lib.free)(ptr);
            s
        };
        let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| OpaError::Envelope(e.to_string()))?;
        match v.get("error") {
            Some(err) if !err.is_null() => Err(OpaError::Engine {
                code: err.get("code").and_then(|c| c.as_str()).unwrap_or("unknown").to_string(),
                message: err.get("message").and_then(|c| c.as_str()).unwrap_or("").to_string(),
            }),
            _ => Ok(v),
        }
    }

    /// Add a Rego module under `path`.
    ///
    /// # Errors
    /// OPA's parse or compile error.
    pub fn add_policy(&self, path: &str, source: &str) -> Result<(), OpaError> {
        let (p, s) = (cstring(path)?, cstring(source)?);
        // SAFETY: both pointers are valid NUL-terminated strings for the call's duration.
        let r = unsafe { (self.lib.add_policy)(self.handle, p.as_ptr(), s.as_ptr()) };
        self.envelope(r).map(drop)
    }

    /// Deep-merge a JSON document at the dotted `path` ("" = root).
    ///
    /// # Errors
    /// OPA's merge error.
    pub fn add_data(&self, path: &str, json: &str) -> Result<(), OpaError> {
        let (p, j) = (cstring(path)?, cstring(json)?);
        // SAFETY: as in add_policy.
        let r = unsafe { (self.lib.add_data)(self.handle, p.as_ptr(), j.as_ptr()) };
        self.envelope(r).map(drop)
    }

    /// Evaluate the document at `entrypoint` (`data.pkg.rule`) for a JSON input. OPA
    /// parses the input itself. `Ok(None)` is undefined.
    ///
    /// # Errors
    /// OPA's evaluation error.
    pub fn eval_document(&self, entrypoint: &str, input_json: &str) -> Result<Option<serde_json::Value>, OpaError> {
        let path = entrypoint.strip_prefix("data.").unwrap_or(entrypoint);
        let (p, i) = (cstring(path)?, cstring(input_json)?);
        // SAFETY: as in add_policy; coverage and trace off.
        let r = unsafe { (self.lib.eval_document)(self.handle, p.as_ptr(), i.as_ptr(), 0, 0) };
        let env = self.envelope(r)?;
        Ok(env
            .get("result")
            .and_then(|r| r.get(0))
            .and_then(|r| r.get("expressions"))
            .and_then(|e| e.get(0))
            .and_then(|e| e.get("value"))
            .cloned())
    }
}

impl Drop for OpaEngine {
    fn drop(&mut self) {
        // SAFETY: the handle came from OpaNew and is destroyed once.
        unsafe { (self.lib.destroy)(self.handle) }
    }
}
