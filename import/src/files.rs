//! An import from start to end: each file read and recognised by its shape, names assigned,
//! every chain converted, then the report.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde_json::Value;

use sluice_core::spec::ChainSpec;

use crate::error::{FileError, ImportError, ImportErrorKind};
use crate::report::{ChainReport, FileReport, Report};
use crate::{draft, legacy, thingsboard};

pub(crate) const FAILURE: &str = "Failure";

/// The result of an import: chain files to write, and the report.
#[derive(Debug, Clone)]
pub struct Imported {
    pub chains: Vec<ImportedChain>,
    pub report: Report,
    /// `--relations`: the seed of the chains' relation table, written beside them.
    pub relations: Option<crate::relations::Relations>,
}

/// One chain: its file name in the output directory and its content.
#[derive(Debug, Clone)]
pub struct ImportedChain {
    pub file_name: String,
    pub spec: ChainSpec,
}

/// What one input file holds.
enum Source {
    /// ThingsBoard 2.x–4.x rule chains.
    Chains { shape: String, chains: Vec<thingsboard::RuleChain> },
    /// ThingsBoard 1.x rules.
    Rules { shape: String, rules: Vec<legacy::Rule> },
    /// A ThingsBoard 1.x plugin: connectors for the rules that name it.
    Plugin(legacy::Plugin),
}

/// Output file names, assigned before converting so that chains can refer to each other.
#[derive(Default)]
pub(crate) struct Names {
    taken: BTreeSet<String>,
    /// ThingsBoard rule chain id → the file it becomes.
    pub by_id: BTreeMap<String, String>,
    /// Every ThingsBoard chain of the import: its name and the file it becomes.
    pub chains: Vec<(String, String)>,
    /// `--link UUID=FILE`: the id → the file FILE's (first) chain becomes.
    pub links: BTreeMap<String, String>,
    /// `--profiles FILE`: the device profiles whose alarm rules the device profile nodes get.
    pub profiles: Vec<crate::profiles::Profile>,
    /// `--relations FILE`: entity ids it names resolve `entityId`s of node configurations.
    pub relations: Option<crate::relations::Relations>,
}

/// How a link into another chain (a `TbRuleChainInputNode`, a 2.x `ruleChainConnections` entry)
/// found its target among the chains of the import.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkedBy {
    /// The target chain's id, which the export of that chain carries (bulk exports do).
    Uuid,
    /// The calling node's name is the target chain's name.
    Name,
    /// … ignoring case.
    CaseInsensitiveName,
    /// `--link UUID=FILE`.
    Flag,
}

impl std::fmt::Display for LinkedBy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            LinkedBy::Uuid => "uuid",
            LinkedBy::Name => "name",
            LinkedBy::CaseInsensitiveName => "case-insensitive name",
            LinkedBy::Flag => "--link",
        })
    }
}

impl Names {
    fn assign(&mut self, chain_name: &str) -> String {
        let stem = draft::slug(chain_name);
        let mut name = format!("{stem}.json");
        let mut n = 2;
        while self.taken.contains(&name) {
            name = format!("{stem}-{n}.json");
            n += 1;
        }
        self.taken.insert(name.clone());
        name
    }

    /// The file of the chain a link into `id` goes to, from the node named `caller` (none for a
    /// 2.x `ruleChainConnections` entry, whose calling node is an ordinary node) of the chain
    /// written to `own`: by id, else by the caller's name (exact, then ignoring case; one chain
    /// only, never the caller's own), else by `--link`.
    pub(crate) fn resolve(&self, id: &str, caller: Option<&str>, own: &str) -> Option<(String, LinkedBy)> {
        if let Some(file) = self.by_id.get(id) {
            return Some((file.clone(), LinkedBy::Uuid));
        }
        if let Some(caller) = caller.map(str::trim).filter(|c| !c.is_empty()) {
            let others = || self.chains.iter().filter(|(_, file)| file != own);
            let unique = |found: Vec<&(String, String)>| match found.as_slice() {
                [(_, file)] => Some(file.clone()),
                _ => None,
            };
            if let Some(file) = unique(others().filter(|(name, _)| name.trim() == caller).collect()) {
                return Some((file, LinkedBy::Name));
            }
            let lower = caller.to_lowercase();
            if let Some(file) = unique(others().filter(|(name, _)| name.trim().to_lowercase() == lower).collect()) {
                return Some((file, LinkedBy::CaseInsensitiveName));
            }
        }
        self.links.get(id).map(|file| (file.clone(), LinkedBy::Flag))
    }
}

/// `--link UUID=FILE`: links into the chain `UUID` go to the (first) chain of `FILE`, which is
/// imported too if it is not among the files given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub id: String,
    pub file: PathBuf,
}

/// A `--link` that is not `UUID=FILE`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("expected UUID=FILE, got {0:?}")]
pub struct LinkSyntaxError(pub String);

impl std::str::FromStr for Link {
    type Err = LinkSyntaxError;

    fn from_str(text: &str) -> Result<Link, LinkSyntaxError> {
        match text.split_once('=') {
            Some((id, file)) if !id.trim().is_empty() && !file.trim().is_empty() => {
                Ok(Link { id: id.trim().to_string(), file: PathBuf::from(file.trim()) })
            }
            _ => Err(LinkSyntaxError(text.to_string())),
        }
    }
}

/// Reads `path` as JSON, with the line and column of a syntax error.
fn read_json(path: &Path) -> Result<Value, ImportError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ImportError::new(path, ImportErrorKind::File(FileError::Io(e.to_string()))))?;
    serde_json::from_str(&text)
        .map_err(|e| ImportError::new(path, ImportErrorKind::File(FileError::syntax(&e, e.to_string()))))
}

/// Which kind of export `value` is.
fn classify(path: &Path, value: &Value) -> Result<Source, ImportError> {
    let has = |key: &str| value.get(key).is_some();
    if has("ruleChain") || has("ruleChains") || has("nodes") {
        let (shape, chains) = thingsboard::parse(path, value)?;
        return Ok(Source::Chains { shape, chains });
    }
    if has("rules") {
        let rules = legacy::parse_rules(path, value)?;
        return Ok(Source::Rules { shape: format!("ThingsBoard 1.x rules ({})", rules.len()), rules });
    }
    if has("filters") || has("pluginToken") {
        let rule = legacy::parse_rule(path, value, None)?;
        return Ok(Source::Rules { shape: "ThingsBoard 1.x rule".into(), rules: vec![rule] });
    }
    if has("apiToken") && has("clazz") {
        return Ok(Source::Plugin(legacy::parse_plugin(path, value)?));
    }
    Err(crate::error::invalid(
        path,
        "not a ThingsBoard export: expected `ruleChain` + `metadata`, `ruleChains`, `nodes` (2.x–4.x), or a 1.x rule (`filters`, `pluginToken`), `rules`, or plugin (`apiToken`, `clazz`)",
    ))
}

/// Imports `files` (paths as given: the report shows them so).
pub fn import_thingsboard(files: &[PathBuf]) -> Result<Imported, ImportError> {
    import_thingsboard_linked(files, &[])
}

/// Imports `files`, linking chains by `links` (`--link`) where id and name do not: each link's
/// file is imported too when it is not among `files`.
pub fn import_thingsboard_linked(files: &[PathBuf], links: &[Link]) -> Result<Imported, ImportError> {
    import_thingsboard_with(files, &ImportOptions { links: links.to_vec(), ..ImportOptions::default() })
}

/// What an import takes besides the export files: `--link`, `--profiles`, `--relations`.
#[derive(Debug, Clone, Default)]
pub struct ImportOptions {
    /// Links into chains whose id and name do not resolve ([`Link`]).
    pub links: Vec<Link>,
    /// Device profile exports: every device profile node gets their alarm rules
    /// ([`crate::profiles`]).
    pub profiles: Vec<PathBuf>,
    /// ThingsBoard entity relations: every chain seeds its `relations` table from them
    /// ([`crate::relations`]).
    pub relations: Option<PathBuf>,
}

/// Imports `files` as [`import_thingsboard_linked`] does, with the device profiles and entity
/// relations of `options`.
pub fn import_thingsboard_with(files: &[PathBuf], options: &ImportOptions) -> Result<Imported, ImportError> {
    let links = &options.links[..];
    let relations = options.relations.as_deref().map(crate::relations::Relations::read).transpose()?;
    let mut profile_reports = Vec::new();
    let mut all_profiles = Vec::new();
    for path in &options.profiles {
        let read = crate::profiles::read(path, &read_json(path)?)?;
        let listed: Vec<String> = read
            .iter()
            .map(|p| {
                format!("{} ({} alarm rule(s){})", p.name, p.alarms.len(), if p.default { ", default" } else { "" })
            })
            .collect();
        profile_reports.push(FileReport {
            file: path.display().to_string(),
            shape: format!("ThingsBoard device profiles ({}): {}", read.len(), listed.join(", ")),
            notes: Vec::new(),
            chains: Vec::new(),
        });
        all_profiles.extend(read);
    }
    crate::profiles::check_unique(&all_profiles)?;
    let mut files = files.to_vec();
    for link in links {
        if !files.iter().any(|f| same_file(f, &link.file)) {
            files.push(link.file.clone());
        }
    }
    let mut sources = Vec::with_capacity(files.len());
    for file in &files {
        let value = read_json(file)?;
        sources.push((file.clone(), classify(file, &value)?));
    }
    // Pass 1: names for every chain, ids of ThingsBoard chains, and the 1.x plugins by token.
    let mut names = Names { profiles: all_profiles, relations: relations.clone(), ..Names::default() };
    let mut out_names: Vec<Vec<String>> = Vec::new();
    let mut plugins: BTreeMap<String, legacy::Plugin> = BTreeMap::new();
    for (_, source) in &sources {
        let mut these = Vec::new();
        match source {
            Source::Chains { chains, .. } => {
                for chain in chains {
                    let name = names.assign(&chain.name);
                    if let Some(id) = &chain.id {
                        names.by_id.insert(id.clone(), name.clone());
                    }
                    names.chains.push((chain.name.clone(), name.clone()));
                    these.push(name);
                }
            }
            Source::Rules { rules, .. } => these.extend(rules.iter().map(|r| names.assign(&r.name))),
            Source::Plugin(plugin) => {
                plugins.insert(plugin.token.clone(), plugin.clone());
            }
        }
        out_names.push(these);
    }
    for link in links {
        let Some(k) = sources.iter().position(|(f, _)| same_file(f, &link.file)) else { continue };
        match (&sources[k].1, out_names[k].first()) {
            (Source::Chains { .. }, Some(out)) => {
                names.links.insert(link.id.clone(), out.clone());
            }
            _ => {
                return Err(crate::error::invalid(
                    &link.file,
                    format!("--link {}={}: the file holds no ThingsBoard rule chain", link.id, link.file.display()),
                ));
            }
        }
    }
    // Pass 2: convert.
    let mut chains = Vec::new();
    let mut report = Report::default();
    let mut used_tokens = BTreeSet::new();
    for ((file, source), these) in sources.iter().zip(out_names) {
        let shown = file.display().to_string();
        let mut file_report =
            FileReport { file: shown.clone(), shape: String::new(), notes: Vec::new(), chains: Vec::new() };
        match source {
            Source::Chains { shape, chains: tb_chains } => {
                file_report.shape = shape.clone();
                for (chain, out) in tb_chains.iter().zip(these) {
                    let (spec, findings) = thingsboard::convert(file, chain, &out, &names)?;
                    file_report.chains.push(ChainReport {
                        name: chain.name.clone(),
                        out: out.clone(),
                        source_nodes: chain.nodes.len(),
                        sluice_nodes: spec.nodes.len(),
                        findings,
                    });
                    chains.push(ImportedChain { file_name: out, spec });
                }
            }
            Source::Rules { shape, rules } => {
                file_report.shape = shape.clone();
                for (rule, out) in rules.iter().zip(these) {
                    used_tokens.insert(rule.plugin_token.clone());
                    let (spec, findings) = legacy::convert(file, rule, &plugins)?;
                    file_report.chains.push(ChainReport {
                        name: rule.name.clone(),
                        out: out.clone(),
                        source_nodes: rule.parts(),
                        sluice_nodes: spec.nodes.len(),
                        findings,
                    });
                    chains.push(ImportedChain { file_name: out, spec });
                }
            }
            Source::Plugin(plugin) => {
                file_report.shape = format!("ThingsBoard 1.x plugin {} ({})", plugin.class_short(), plugin.token);
            }
        }
        report.files.push(file_report);
    }
    // A `--link` no node of the import links through is most likely a mistyped id: say so.
    let referenced: BTreeSet<&str> = sources
        .iter()
        .filter_map(|(_, source)| match source {
            Source::Chains { chains, .. } => Some(chains),
            _ => None,
        })
        .flatten()
        .flat_map(|chain| {
            let inputs = chain.nodes.iter().filter(|n| n.short() == "TbRuleChainInputNode");
            let ids = inputs.filter_map(|n| n.config.get("ruleChainId").and_then(Value::as_str));
            ids.chain(chain.chain_links.iter().map(|l| l.target.as_str()))
        })
        .collect();
    for link in links.iter().filter(|l| !referenced.contains(l.id.as_str())) {
        if let Some(k) = sources.iter().position(|(f, _)| same_file(f, &link.file)) {
            report.files[k]
                .notes
                .push(format!("--link {}: no node of the import links to rule chain {}", link.id, link.id));
        }
    }
    // Plugins: say what became of each (a connector of the rules naming it, or nothing).
    for ((_, source), file_report) in sources.iter().zip(&mut report.files) {
        if let Source::Plugin(plugin) = source {
            file_report.notes.push(legacy::plugin_note(plugin, used_tokens.contains(&plugin.token)));
        }
    }
    if !profile_reports.is_empty() {
        let uses = chains.iter().flat_map(|c| &c.spec.nodes).any(|n| n.module.as_deref() == Some("device-profile"));
        if !uses {
            for file_report in &mut profile_reports {
                file_report
                    .notes
                    .push("no device profile node in the imported chains: these profiles are not used".into());
            }
        }
        report.files.extend(profile_reports);
    }
    if let Some(r) = &relations {
        for chain in &mut chains {
            let seed = sluice_core::spec::TableSpec { seed: crate::relations::SEED_FILE.into() };
            chain.spec.tables.insert(crate::relations::TABLE.into(), seed);
        }
        report.files.push(FileReport {
            file: r.file.display().to_string(),
            shape: format!(
                "ThingsBoard entity relations: {} relation(s) of {} entities → {}, the seed of every chain's `{}` table",
                r.count,
                r.rows.len(),
                crate::relations::SEED_FILE,
                crate::relations::TABLE
            ),
            notes: Vec::new(),
            chains: Vec::new(),
        });
    }
    Ok(Imported { chains, report, relations })
}

/// Whether `a` and `b` name the same file (as given, or once made canonical).
fn same_file(a: &Path, b: &Path) -> bool {
    a == b || matches!((a.canonicalize(), b.canonicalize()), (Ok(a), Ok(b)) if a == b)
}

impl Imported {
    /// Writes every chain into `dir` (created if needed), pretty-printed, one file each.
    pub fn write(&self, dir: &Path) -> Result<Vec<PathBuf>, ImportError> {
        let fail = |path: &Path, e: &dyn std::fmt::Display| {
            ImportError::new(path, ImportErrorKind::Write { path: path.to_path_buf(), message: e.to_string() })
        };
        std::fs::create_dir_all(dir).map_err(|e| fail(dir, &e))?;
        let mut written = Vec::new();
        for chain in &self.chains {
            let path = dir.join(&chain.file_name);
            // The canonical form (`sluice fmt`'s), so that an imported chain diffs cleanly.
            let text = sluice_core::spec::canonical::canonical(&chain.spec).map_err(|e| fail(&path, &e))?;
            std::fs::write(&path, text).map_err(|e| fail(&path, &e))?;
            written.push(path);
        }
        if let Some(relations) = &self.relations {
            let path = dir.join(crate::relations::SEED_FILE);
            std::fs::write(&path, relations.seed_text()).map_err(|e| fail(&path, &e))?;
            written.push(path);
        }
        Ok(written)
    }

    /// `--strict`: an error when any node became a placeholder.
    pub fn check_strict(&self) -> Result<(), ImportError> {
        let placeholders: Vec<_> = self.report.placeholders().collect();
        match placeholders.first() {
            None => Ok(()),
            Some((file, first)) => Err(ImportError::new(&file.file, ImportErrorKind::Strict(placeholders.len()))
                .at(format!("{} {}", first.at, first.class))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(chains: &[(&str, &str)]) -> Names {
        Names { chains: chains.iter().map(|(n, f)| (n.to_string(), f.to_string())).collect(), ..Default::default() }
    }

    #[test]
    fn links_resolve_by_uuid_then_name_then_case_then_flag() {
        let mut n = names(&[("Root", "root.json"), ("Alarms", "alarms.json"), ("alarms", "alarms-2.json")]);
        n.by_id.insert("id-1".into(), "alarms-2.json".into());
        n.links.insert("id-2".into(), "alarms.json".into());
        assert_eq!(n.resolve("id-1", Some("Alarms"), "root.json"), Some(("alarms-2.json".into(), LinkedBy::Uuid)));
        assert_eq!(n.resolve("x", Some("Alarms"), "root.json"), Some(("alarms.json".into(), LinkedBy::Name)));
        // Two chains named so ignoring case: ambiguous, so not by name; the flag decides.
        assert_eq!(n.resolve("id-2", Some("ALARMS"), "root.json"), Some(("alarms.json".into(), LinkedBy::Flag)));
        assert_eq!(n.resolve("x", Some("ALARMS"), "root.json"), None);
        let n = names(&[("Root", "root.json"), ("Alarms", "alarms.json")]);
        assert_eq!(
            n.resolve("x", Some(" alarms "), "root.json"),
            Some(("alarms.json".into(), LinkedBy::CaseInsensitiveName))
        );
        // Never the calling chain itself, and a 2.x jump (no caller) never by name.
        assert_eq!(n.resolve("x", Some("Root"), "root.json"), None);
        assert_eq!(n.resolve("x", None, "root.json"), None);
    }

    #[test]
    fn link_flags_parse() {
        let link: Link = "6d8a6230-994c-11e8-851b-0b1b022bf58b=chains/alarms.json".parse().unwrap();
        assert_eq!(link.id, "6d8a6230-994c-11e8-851b-0b1b022bf58b");
        assert_eq!(link.file, PathBuf::from("chains/alarms.json"));
        assert!("no-equals".parse::<Link>().is_err());
        assert!("=file".parse::<Link>().is_err());
    }
}
