//! The evaluator: a bundle compiled once ([`CompiledBundle`], `Send + Sync`, shared behind
//! an `Arc`), and per-shard evaluation state built from it ([`Evaluator`], owned by one
//! thread).
//!
//! Each entrypoint is compiled to regorus's RVM bytecode, its fastest path; an entrypoint
//! the RVM compiler rejects falls back to the interpreter, and the decision's metadata
//! says which engine answered. Every failure — unknown entrypoint, policy error,
//! instruction limit, undefined result, malformed document — is a deny with a reason.

use std::sync::Arc;

use regorus::languages::rego::compiler::Compiler;
use regorus::rvm::program::Program;
use regorus::rvm::Instruction;
use regorus::rvm::vm::{ExecutionMode, RegoVM, VmError};
use regorus::{Engine, Value};

use crate::bundle::{Bundle, DECISION_ENTRYPOINT};
use crate::decision::{Decision, EngineKind};
use crate::error::{BundleError, EvalError};

pub mod explain;

/// Limits on one evaluation, so a pathological policy or input cannot stall a core.
#[derive(Debug, Clone, Copy)]
pub struct EvalLimits {
    /// RVM instructions per evaluation.
    pub max_instructions: usize,
}

impl Default for EvalLimits {
    fn default() -> Self {
        // The shipped bundle needs a few thousand; 1M is ~1 ms of work.
        EvalLimits {
            max_instructions: 1_000_000,
        }
    }
}

/// Which engines an [`Evaluator`] may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EnginePreference {
    /// RVM where the entrypoint compiled to it, the interpreter otherwise.
    Fastest,
    /// The interpreter for everything (reference runs and comparisons).
    Interpreter,
}

/// One compiled entrypoint.
#[derive(Debug)]
struct Entrypoint {
    /// `data.pkg.rule`.
    name: String,
    /// The RVM program, or `None` where the RVM compiler refused the entrypoint.
    program: Option<Arc<Program>>,
    /// Why the RVM compiler refused it (reported by `sark-pdp check`).
    rvm_refusal: Option<String>,
    /// Whether the program calls an extension ([`crate::builtins`]): its VM then runs
    /// suspendable, and each call suspends it until the host answers.
    suspends: bool,
}

/// A bundle parsed, validated and compiled: built once, shared by every shard.
#[derive(Debug)]
pub struct CompiledBundle {
    pub revision: Arc<str>,
    pub origin: String,
    /// An engine holding every module and the data; each shard clones it for the
    /// interpreter path.
    engine: Engine,
    data: Value,
    entrypoints: Vec<Entrypoint>,
    limits: EvalLimits,
}

impl CompiledBundle {
    /// Parse every module, load the data, and compile every entrypoint.
    ///
    /// # Errors
    /// A module that does not parse, data that conflicts with rules, an entrypoint that no
    /// module defines or that fails to compile, data the policies read that nothing defines.
    pub fn compile(bundle: &Bundle, limits: EvalLimits) -> Result<CompiledBundle, BundleError> {
        let mut engine = Engine::new();
        crate::builtins::register(&mut engine).map_err(|e| BundleError::Validation {
            path: bundle.origin.clone(),
            message: e,
        })?;
        let host_await = crate::builtins::host_await_table();
        for m in &bundle.modules {
            engine
                .add_policy(m.path.clone(), m.source.clone())
                .map_err(|e| {
                    let text = e.to_string();
                    let (at, message) = locate(&text);
                    BundleError::Parse {
                        path: format!("{}/{}", bundle.origin, at.unwrap_or(&m.path)),
                        message,
                    }
                })?;
        }
        if let Some((file, root)) = bundle.unresolved_data_roots().into_iter().next() {
            return Err(BundleError::Validation {
                path: format!("{}/{}", bundle.origin, file),
                message: format!("reads {root}, which neither the data nor any package defines"),
            });
        }
        let data = Value::from(bundle.data.clone());
        engine.add_data(data.clone()).map_err(|e| BundleError::Validation {
            path: bundle.origin.clone(),
            message: e.to_string(),
        })?;
        let mut entrypoints = Vec::new();
        for name in &bundle.entrypoints {
            let refuse = |message: String| BundleError::Entrypoint {
                entrypoint: name.clone(),
                message,
            };
            // The interpreter's compile both checks the rule exists and type-checks it.
            let policy = engine
                .compile_with_entrypoint(&name.as_str().into())
                .map_err(|e| refuse(e.to_string()))?;
            let (program, rvm_refusal) = match Compiler::compile_from_policy_with_host_await(&policy, &[name.as_str()], &host_await) {
                Ok(p) => {
                    // Data that collides with a rule is refused here, once, not per shard.
                    p.check_rule_data_conflicts(&data).map_err(|e| refuse(e.to_string()))?;
                    (Some(p), None)
                }
                Err(e) => (None, Some(e.to_string())),
            };
            let suspends = program
                .as_ref()
                .is_some_and(|p| p.instructions.iter().any(|i| matches!(i, Instruction::HostAwait { .. })));
            entrypoints.push(Entrypoint {
                name: name.clone(),
                program,
                rvm_refusal,
                suspends,
            });
        }
        Ok(CompiledBundle {
            revision: bundle.revision.clone(),
            origin: bundle.origin.clone(),
            engine,
            data,
            entrypoints,
            limits,
        })
    }

    /// The entrypoints, each with the engine that will answer it and, for the
    /// interpreter, why the RVM refused it.
    /// The limits it was compiled with.
    pub fn limits(&self) -> EvalLimits {
        self.limits
    }

    pub fn entrypoints(&self) -> impl Iterator<Item = (&str, EngineKind, Option<&str>)> {
        self.entrypoints.iter().map(|e| {
            let kind = if e.program.is_some() {
                EngineKind::Rvm
            } else {
                EngineKind::Interpreter
            };
            (e.name.as_str(), kind, e.rvm_refusal.as_deref())
        })
    }
}

/// A shard's evaluator: its own VMs and interpreter, never shared.
#[derive(Debug)]
pub struct Evaluator {
    bundle: Arc<CompiledBundle>,
    /// One VM per entrypoint (parallel to `bundle.entrypoints`); `None` uses the interpreter.
    vms: Vec<Option<RegoVM>>,
    interpreter: Engine,
    decision_index: Option<usize>,
}

impl Evaluator {
    /// Build a shard's evaluation state. Cheap: programs and data are shared by `Arc`.
    pub fn new(bundle: Arc<CompiledBundle>, preference: EnginePreference) -> Evaluator {
        let vms = bundle
            .entrypoints
            .iter()
            .map(|ep| {
                let program = ep.program.as_ref().filter(|_| preference == EnginePreference::Fastest)?;
                let mut vm = RegoVM::new();
                vm.load_program(program.clone());
                vm.set_max_instructions(bundle.limits.max_instructions);
                if ep.suspends {
                    vm.set_execution_mode(ExecutionMode::Suspendable);
                }
                // Checked for conflicts when compiled; cannot fail here.
                vm.set_data(bundle.data.clone()).ok()?;
                Some(vm)
            })
            .collect();
        let decision_index = bundle.entrypoints.iter().position(|e| e.name == DECISION_ENTRYPOINT);
        Evaluator {
            interpreter: bundle.engine.clone(),
            vms,
            decision_index,
            bundle,
        }
    }

    pub fn bundle(&self) -> &Arc<CompiledBundle> {
        &self.bundle
    }

    /// Evaluate an entrypoint on an input; `Undefined` results are an error.
    ///
    /// # Errors
    /// [`EvalError`] for an unknown entrypoint, a policy error, a limit, or undefined.
    pub fn evaluate(&mut self, entrypoint: &str, input: Value) -> Result<(Value, EngineKind), EvalError> {
        let index = self
            .bundle
            .entrypoints
            .iter()
            .position(|e| e.name == entrypoint)
            .ok_or_else(|| EvalError::UnknownEntrypoint(entrypoint.to_string()))?;
        self.evaluate_index(index, input)
    }

    fn evaluate_index(&mut self, index: usize, input: Value) -> Result<(Value, EngineKind), EvalError> {
        let name = self.bundle.entrypoints.get(index).map(|e| e.name.as_str()).unwrap_or("");
        crate::builtins::begin();
        let (value, kind) = match self.vms.get_mut(index).and_then(Option::as_mut) {
            Some(vm) => {
                vm.set_input(input);
                let vm_error = |e: VmError| match e {
                    VmError::InstructionLimitExceeded { .. } | VmError::TimeLimitExceeded { .. } => {
                        EvalError::Limit(e.to_string())
                    }
                    other => EvalError::Policy(other.to_string()),
                };
                let mut v = vm.execute().map_err(vm_error)?;
                // Each extension call suspends the VM; answer it and resume.
                while let Some(Value::String(builtin)) = vm.get_host_await_identifier() {
                    let builtin = builtin.clone();
                    let answer = match vm.get_host_await_argument() {
                        Some(Value::Array(args)) => crate::builtins::call(&builtin, &args.to_vec()).map_err(EvalError::Policy)?,
                        _ => return Err(EvalError::Policy(format!("{builtin}: no arguments"))),
                    };
                    v = vm.resume(Some(answer)).map_err(vm_error)?;
                }
                (v, EngineKind::Rvm)
            }
            None => {
                self.interpreter.set_input(input);
                let v = self
                    .interpreter
                    .eval_rule(name.to_string())
                    .map_err(|e| EvalError::Policy(e.to_string()))?;
                (v, EngineKind::Interpreter)
            }
        };
        if value == Value::Undefined {
            return Err(EvalError::Undefined(name.to_string()));
        }
        Ok((value, kind))
    }

    /// The engine that answers entrypoint `index`: its VM, or the interpreter.
    fn engine_at(&self, index: usize) -> EngineKind {
        if matches!(self.vms.get(index), Some(Some(_))) {
            EngineKind::Rvm
        } else {
            EngineKind::Interpreter
        }
    }

    /// SARK's decision (`data.sark.decision`) for an input document, or for an input
    /// that could not be built (`Err`). Never fails: any error is a deny carrying it.
    pub fn decide(&mut self, input: Result<Value, EvalError>) -> Decision {
        let revision = self.bundle.revision.clone();
        let Some(index) = self.decision_index else {
            return Decision::deny(
                EvalError::UnknownEntrypoint(DECISION_ENTRYPOINT.to_string()),
                EngineKind::Interpreter,
                revision,
            );
        };
        let engine = self.engine_at(index);
        // Any JSON value is evaluated, objects or not: the policy decides what a wrong
        // input gets (the shipped bundle denies it with reasons), as OPA would.
        let input = match input {
            Ok(v) => v,
            Err(e) => return Decision::deny(e, engine, revision),
        };
        match self.evaluate_index(index, input) {
            Ok((doc, kind)) => {
                let mut d = Decision::from_document(&doc, kind, revision);
                // A verified token's answer holds until it expires: cache it no longer.
                if let Some(left) = crate::builtins::seconds_left() {
                    d.cache_ttl_s = Some(d.cache_ttl_s.map_or(left, |t| t.min(left)));
                }
                d
            }
            Err(e) => Decision::deny(e, engine, revision),
        }
    }
}

/// Split regorus's multi-line diagnostic (`--> file:line:col`, a source excerpt,
/// `error: message`) into the location and a one-line message.
fn locate(diagnostic: &str) -> (Option<&str>, String) {
    let at = diagnostic
        .lines()
        .find_map(|l| l.trim().strip_prefix("--> "))
        .map(str::trim);
    let message = diagnostic
        .lines()
        .find_map(|l| l.trim().strip_prefix("error: "))
        .map_or_else(|| diagnostic.lines().map(str::trim).collect::<Vec<_>>().join(" "), str::to_string);
    (at, message)
}

/// Parse a JSON input document into a regorus value.
///
/// # Errors
/// [`EvalError::BadInput`] with the position of the problem.
pub fn input_from_json(json: &str) -> Result<Value, EvalError> {
    // Refuse what parsers read differently (a key named twice) or cannot build (nesting
    // past 128), then one pass straight into regorus values (no serde_json tree in
    // between), with serde_json's errors (line and column).
    crate::json_guard::check(json.as_bytes(), crate::json_guard::MAX_DEPTH).map_err(|e| EvalError::BadInput(e.to_string()))?;
    serde_json::from_str::<Value>(json).map_err(|e| EvalError::BadInput(e.to_string()))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use crate::bundle::BundleLimits;

    fn compile(files: &[(&str, &str)]) -> Result<Arc<CompiledBundle>, BundleError> {
        let files = files.iter().map(|(p, s)| (p.to_string(), s.as_bytes().to_vec())).collect();
        let b = Bundle::from_files("t", files, BundleLimits::default())?;
        CompiledBundle::compile(&b, EvalLimits::default()).map(Arc::new)
    }

    const POLICY: &str = r#"package sark
default decision := {"allow": false, "reasons": ["default deny"]}
decision := {"allow": true, "reasons": ["ok"], "cache_ttl_s": data.cfg.ttl} if input.user.id == "alice"
"#;

    #[test]
    fn compiled_bundles_are_shared_and_evaluators_move_to_their_shard() {
        fn shared<T: Send + Sync>() {}
        fn sendable<T: Send>() {}
        shared::<CompiledBundle>();
        sendable::<Evaluator>();
    }

    #[test]
    fn decides_on_both_engines() {
        let b = compile(&[("p.rego", POLICY), ("data.json", r#"{"cfg": {"ttl": 60}}"#)]).unwrap();
        for pref in [EnginePreference::Fastest, EnginePreference::Interpreter] {
            let mut ev = Evaluator::new(b.clone(), pref);
            let d = ev.decide(Ok(input_from_json(r#"{"user": {"id": "alice"}}"#).unwrap()));
            assert!(d.allow, "{pref:?}");
            assert_eq!(d.cache_ttl_s, Some(60));
            let d = ev.decide(Ok(input_from_json(r#"{"user": {"id": "bob"}}"#).unwrap()));
            assert!(!d.allow);
            assert_eq!(d.reasons, vec!["default deny".to_string()]);
        }
        let mut ev = Evaluator::new(b, EnginePreference::Fastest);
        assert_eq!(ev.decide(Ok(Value::new_object())).engine, EngineKind::Rvm);
    }

    #[test]
    fn errors_are_denies_with_codes() {
        let b = compile(&[(
            "p.rego",
            "package sark\ndecision := {\"allow\": true} if input.x == 1\ndecision := {\"allow\": false} if input.x == 1\n",
        )])
        .unwrap();
        for pref in [EnginePreference::Fastest, EnginePreference::Interpreter] {
            let mut ev = Evaluator::new(b.clone(), pref);
            // Undefined: no rule body matches.
            let d = ev.decide(Ok(input_from_json(r#"{"x": 2}"#).unwrap()));
            assert!(!d.allow);
            assert_eq!(d.error.as_ref().map(EvalError::wire_code), Some(1003), "{pref:?} {d:?}");
            // Conflicting complete-rule values: OPA and the interpreter report a conflict;
            // the RVM (regorus 0.14.1) yields undefined. Either way: a deny with an error.
            let d = ev.decide(Ok(input_from_json(r#"{"x": 1}"#).unwrap()));
            assert!(!d.allow);
            let want = if pref == EnginePreference::Fastest { 1003 } else { 1004 };
            assert_eq!(d.error.as_ref().map(EvalError::wire_code), Some(want), "{pref:?} {d:?}");
            // Not an object: evaluated all the same (here no rule is defined for it).
            let d = ev.decide(Ok(Value::from(3)));
            assert_eq!(d.error.as_ref().map(EvalError::wire_code), Some(1003), "{d:?}");
            // An input that could not be built: a deny carrying the error.
            let d = ev.decide(Err(EvalError::BadInput("x".into())));
            assert_eq!(d.error.as_ref().map(EvalError::wire_code), Some(1002));
        }
    }

    #[test]
    fn instruction_limit_is_a_deny() {
        let files = [(
            "p.rego",
            "package sark\ndecision := {\"allow\": count([x | some x in numbers.range(1, 100000); x % 7 == 0]) > 0}\n",
        )];
        let b = Bundle::from_files(
            "t",
            files.iter().map(|(p, s)| (p.to_string(), s.as_bytes().to_vec())).collect(),
            BundleLimits::default(),
        )
        .unwrap();
        let b = Arc::new(CompiledBundle::compile(&b, EvalLimits { max_instructions: 1000 }).unwrap());
        let mut ev = Evaluator::new(b, EnginePreference::Fastest);
        let d = ev.decide(Ok(Value::new_object()));
        assert!(!d.allow);
        assert_eq!(d.error.as_ref().map(EvalError::wire_code), Some(1005), "{d:?}");
    }

    #[test]
    fn unknown_entrypoint_and_bad_json() {
        let b = compile(&[("p.rego", POLICY), ("data.json", r#"{"cfg": {"ttl": 60}}"#)]).unwrap();
        let mut ev = Evaluator::new(b, EnginePreference::Fastest);
        let err = ev.evaluate("data.nope.allow", Value::new_object()).unwrap_err();
        assert_eq!(err.wire_code(), 1001);
        let err = input_from_json("{\n \"a\": }").unwrap_err();
        assert!(err.to_string().contains("line 2 column 7"), "{err}");
    }

    #[test]
    fn compile_errors_name_the_problem() {
        let err = compile(&[("p.rego", "package sark\ndecision := {\"allow\": \n")]).unwrap_err();
        assert!(matches!(err, BundleError::Parse { .. }), "{err}");
        assert!(err.to_string().starts_with("t/p.rego:3:1: "), "{err}");
        assert_eq!(err.to_string().lines().count(), 1, "{err}");
        let err = compile(&[("p.rego", "package sark\ndecision := data.missing.x\n")]).unwrap_err();
        assert!(err.to_string().contains("data.missing"), "{err}");
    }
}
