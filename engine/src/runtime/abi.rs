//! The host's reading of the ABI contract (`rule-sdk/ABI.md`): what a module must export, what it
//! may import, and the version it must report. A module that breaks the contract is refused at
//! load with a message that names what is wrong, never half-run.

use wasmtime::{ExternType, Module, ValType};

/// The ABI version this engine speaks.
pub const ABI_VERSION: u32 = sluice_sdk::abi::ABI_VERSION;

/// The import module name of every host function.
pub const IMPORT_MODULE: &str = "sluice";

use ValType::{F64, I32, I64};

/// Every host function a guest may import: name, parameters, results.
pub const HOST_IMPORTS: &[(&str, &[ValType], &[ValType])] = &[
    ("log", &[I32, I32, I32], &[]),
    ("now_ms", &[], &[I64]),
    ("emit", &[I32, I32, I32, I32], &[]),
    ("forward", &[I32, I32], &[]),
    ("fail", &[I32, I32], &[]),
    ("state_get", &[I32, I32], &[I64]),
    ("take_value", &[I32], &[]),
    ("state_put", &[I32, I32, I32, I32], &[]),
    ("state_delete", &[I32, I32], &[]),
    ("watermark", &[], &[I64]),
    ("window_define", &[I32, I32], &[I32]),
    ("window_add", &[I32, I32, I32, I64, F64], &[I32]),
    ("window_item", &[I32, I32, I32, I64, I32, I32, I32], &[I32]),
    ("window_fold_get", &[I32, I32, I32, I64], &[I64]),
    ("window_fold_put", &[I32, I32, I32, I64, I32, I32], &[I32]),
    ("table_get", &[I32, I32, I32, I32], &[I64]),
    ("table_put", &[I32, I32, I32, I32, I32, I32], &[]),
    ("table_delete", &[I32, I32, I32, I32], &[]),
    ("timer_set", &[I32, I32, I64], &[]),
    ("timer_cancel", &[I32, I32], &[]),
    ("action_call", &[I32, I32], &[I64]),
];

/// Exports a guest may have: `sluice_on_window(len) -> status`, required once it declares a
/// window.
pub const OPTIONAL_EXPORTS: &[(&str, &[ValType], &[ValType])] =
    &[("sluice_on_window", &[I32], &[I32]), ("sluice_on_timer", &[I32], &[I32])];

/// Every function a guest must export.
pub const GUEST_EXPORTS: &[(&str, &[ValType], &[ValType])] = &[
    ("sluice_abi_version", &[], &[I32]),
    ("sluice_reserve", &[I32], &[I32]),
    ("sluice_init", &[I32], &[I32]),
    ("sluice_on_msg", &[I32], &[I32]),
];

fn same(actual: impl ExactSizeIterator<Item = ValType>, expected: &[ValType]) -> bool {
    actual.len() == expected.len() && actual.zip(expected).all(|(a, e)| ValType::eq(&a, e))
}

fn describe(params: &[ValType], results: &[ValType]) -> String {
    let list = |v: &[ValType]| v.iter().map(|t| t.to_string()).collect::<Vec<_>>().join(", ");
    format!("({}) -> ({})", list(params), list(results))
}

/// Checks imports and exports against the contract. The version itself is checked by calling
/// `sluice_abi_version` on the first instance.
pub fn check(module: &Module) -> Result<(), String> {
    for import in module.imports() {
        let (module_name, name) = (import.module(), import.name());
        let known = HOST_IMPORTS.iter().find(|(n, _, _)| module_name == IMPORT_MODULE && *n == name);
        let Some((_, params, results)) = known else {
            let allowed: Vec<_> = HOST_IMPORTS.iter().map(|(n, _, _)| *n).collect();
            return Err(format!(
                "imports `{module_name}::{name}`, which the host does not provide \
                 (no WASI; only `{IMPORT_MODULE}::{{{}}}`)",
                allowed.join(", ")
            ));
        };
        match import.ty() {
            ExternType::Func(f) if same(f.params(), params) && same(f.results(), results) => {}
            ExternType::Func(f) => {
                let (p, r): (Vec<_>, Vec<_>) = (f.params().collect(), f.results().collect());
                return Err(format!(
                    "imports `{IMPORT_MODULE}::{name}` as {}; the host provides {}",
                    describe(&p, &r),
                    describe(params, results)
                ));
            }
            _ => return Err(format!("imports `{IMPORT_MODULE}::{name}` as something other than a function")),
        }
    }
    let exports: Vec<_> = module.exports().map(|e| (e.name().to_string(), e.ty())).collect();
    let find = |name: &str| exports.iter().find(|(n, _)| n == name).map(|(_, t)| t);
    match find("memory") {
        Some(ExternType::Memory(_)) => {}
        _ => return Err("does not export its linear memory as `memory`".into()),
    }
    for (name, params, results) in GUEST_EXPORTS {
        match find(name) {
            Some(ExternType::Func(f)) if same(f.params(), params) && same(f.results(), results) => {}
            Some(_) => {
                return Err(format!("exports `{name}` with the wrong type; expected {}", describe(params, results)));
            }
            None => {
                return Err(format!(
                    "does not export `{name}`: not a Sluice rule module (build it against sluice-sdk \
                     with #[filter], #[transform] or #[node])"
                ));
            }
        }
    }
    Ok(())
}
