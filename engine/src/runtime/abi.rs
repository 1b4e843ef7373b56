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
    ("msg_str", &[I32, I32, I32, I32, I32, I32], &[I64]),
    ("msg_number", &[I32, I32, I32, I32], &[F64]),
    ("msg_has", &[I32, I32, I32, I32], &[I32]),
    ("msg_ts", &[I32], &[I64]),
    ("forward", &[I32, I32, I32], &[]),
    ("out_copy", &[I32], &[I32]),
    ("out_set", &[I32, I32, I32, I32, I32, I32], &[]),
    ("out_set_ts", &[I32, I64], &[]),
    ("out_remove", &[I32, I32, I32, I32], &[]),
    ("emit", &[I32, I32, I32], &[]),
    ("emit_json", &[I32, I32, I32, I32], &[]),
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
    ("series_append", &[I32, I32, I32, I32, I32, I32], &[I32]),
    ("series_query", &[I32, I32, I32, I32, I32, I32], &[I64]),
    ("timer_set", &[I32, I32, I64], &[]),
    ("timer_cancel", &[I32, I32], &[]),
    ("action_call", &[I32, I32], &[I64]),
];

/// Exports a guest may have: `sluice_on_window(len) -> status`, required once it declares a
/// window; `sluice_on_timer(len) -> status`; `sluice_config_schema() -> ptr << 32 | len`, its
/// config's JSON Schema (see `manifest.rs`).
pub const OPTIONAL_EXPORTS: &[(&str, &[ValType], &[ValType])] =
    &[("sluice_on_window", &[I32], &[I32]), ("sluice_on_timer", &[I32], &[I32]), ("sluice_config_schema", &[], &[I64])];

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

#[cfg(test)]
mod tests {
    use super::*;

    /// `rule-sdk/ABI.md` is the contract guests in other languages are written against: its
    /// import table (§5) must list exactly the functions the host links, with their wasm types.
    #[test]
    fn abi_md_lists_every_host_import() {
        let doc = include_str!("../../../rule-sdk/ABI.md");
        let types = |text: &str| -> Vec<String> {
            text.split(|c: char| !c.is_ascii_alphanumeric())
                .filter(|w| matches!(*w, "i32" | "i64" | "f64"))
                .map(String::from)
                .collect()
        };
        let mut documented = Vec::new();
        let table =
            doc.split("| Import | wasm type | Rust SDK wrapper |").nth(1).expect("ABI.md has the §5 import table");
        for row in table.lines().skip(2).take_while(|l| l.starts_with('|')) {
            let cells: Vec<&str> = row.split('|').map(str::trim).collect();
            let name = cells[1].trim_matches('`').to_string();
            let (params, results) = cells[2].trim_matches('`').split_once("->").expect("a wasm type with ->");
            documented.push((name, types(params), types(results)));
        }
        let actual: Vec<(String, Vec<String>, Vec<String>)> = HOST_IMPORTS
            .iter()
            .map(|(n, p, r)| {
                let list = |v: &[ValType]| v.iter().map(|t| t.to_string()).collect::<Vec<_>>();
                (n.to_string(), list(p), list(r))
            })
            .collect();
        let mut sorted_doc = documented.clone();
        sorted_doc.sort();
        let mut sorted_actual = actual.clone();
        sorted_actual.sort();
        assert_eq!(sorted_doc, sorted_actual, "ABI.md §5 and HOST_IMPORTS differ");
        // And the version the document describes.
        assert!(doc.starts_with(&format!("# The Sluice guest ABI, version {ABI_VERSION}\n")));
    }
}
