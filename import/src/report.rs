//! The import report: what each file held, which chain each became, and every node that did not
//! carry over as it was — a placeholder (unsupported, routes to `Failure`) or a note (carried over
//! with a difference worth knowing). It is plain text with one line per fact, in input order, so
//! it can be read, grepped and compared against a golden file:
//!
//! ```text
//! tb-root_rule_chain.json: ThingsBoard rule chain export
//!   chain "Root Rule Chain" -> root-rule-chain.json (6 ThingsBoard nodes, 7 Sluice nodes)
//!   placeholder tb-edge_root_rule_chain.json node 6 TbMsgPushToCloudNode "Push to cloud": …
//!   note tb-root_rule_chain.json node 3 TbLogNode "Log RPC from Device": …
//!   link root.json node 4 TbRuleChainInputNode "Alarms": -> alarms.json (by name)
//!   secret root.json node 6 TbRestApiCallNode "Telegram": URL path token -> ${TB_TELEGRAM_TOKEN}
//! total: 1 chain, 1 placeholder, 2 notes, 1 link resolved, 0 unresolved, 1 secret
//! ```
//!
//! A link into another chain that found no target is a placeholder whose text starts with
//! `unresolved link:`; the links and secrets parts of the total appear when there are any.

use std::fmt;

/// The report of one `sluice import thingsboard` run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    pub files: Vec<FileReport>,
}

/// One input file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileReport {
    /// The file as given on the command line.
    pub file: String,
    /// What kind of export it is (`ThingsBoard rule chain export`, `ThingsBoard 1.x plugin`, …).
    pub shape: String,
    /// File-level facts (a 1.x plugin's use, a bulk export's unmatched metadata…).
    pub notes: Vec<String>,
    pub chains: Vec<ChainReport>,
}

/// One chain written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainReport {
    pub name: String,
    /// The chain file's name in the output directory.
    pub out: String,
    pub source_nodes: usize,
    pub sluice_nodes: usize,
    pub findings: Vec<Finding>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FindingKind {
    /// Not supported: the node is an `unsupported` placeholder that sends everything to `Failure`.
    Placeholder,
    /// Carried over, with a difference the user should know about.
    Note,
    /// A link into another chain, resolved: the text says to which file and how.
    Link,
    /// A credential taken out of the chain: the text says what and which variable holds it now.
    Secret,
}

/// The start of a placeholder's text for a link into another chain that found no target.
pub const UNRESOLVED_LINK: &str = "unresolved link:";

/// A node (or a chain, when `at` is empty) that did not carry over exactly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub kind: FindingKind,
    /// `node 3`, `filters[1]`, `action`; empty for the chain as a whole.
    pub at: String,
    /// The ThingsBoard class, short (`TbSendRPCRequestNode`); empty for the chain as a whole.
    pub class: String,
    pub name: String,
    pub text: String,
}

impl Report {
    /// Every placeholder, with its file: what `--strict` refuses.
    pub fn placeholders(&self) -> impl Iterator<Item = (&FileReport, &Finding)> {
        self.files.iter().flat_map(|f| {
            f.chains.iter().flat_map(move |c| {
                c.findings.iter().filter(|x| x.kind == FindingKind::Placeholder).map(move |x| (f, x))
            })
        })
    }

    /// Every finding, with its file.
    pub fn findings(&self) -> impl Iterator<Item = (&FileReport, &Finding)> {
        self.files.iter().flat_map(|f| f.chains.iter().flat_map(move |c| c.findings.iter().map(move |x| (f, x))))
    }

    fn count(&self, kind: FindingKind) -> usize {
        self.findings().filter(|(_, x)| x.kind == kind).count()
    }

    /// Links into other chains that found no target (placeholders).
    pub fn unresolved_links(&self) -> impl Iterator<Item = (&FileReport, &Finding)> {
        self.placeholders().filter(|(_, x)| x.text.starts_with(UNRESOLVED_LINK))
    }
}

fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for file in &self.files {
            writeln!(f, "{}: {}", file.file, file.shape)?;
            for note in &file.notes {
                writeln!(f, "  note {}: {note}", file.file)?;
            }
            for chain in &file.chains {
                writeln!(
                    f,
                    "  chain {:?} -> {} ({}, {})",
                    chain.name,
                    chain.out,
                    plural(chain.source_nodes, "ThingsBoard node", "ThingsBoard nodes"),
                    plural(chain.sluice_nodes, "Sluice node", "Sluice nodes")
                )?;
                for x in &chain.findings {
                    let kind = match x.kind {
                        FindingKind::Placeholder => "placeholder",
                        FindingKind::Note => "note",
                        FindingKind::Link => "link",
                        FindingKind::Secret => "secret",
                    };
                    if x.at.is_empty() {
                        writeln!(f, "  {kind} {}: {}", file.file, x.text)?;
                    } else {
                        writeln!(f, "  {kind} {} {} {} {:?}: {}", file.file, x.at, x.class, x.name, x.text)?;
                    }
                }
            }
        }
        let chains = self.files.iter().map(|f| f.chains.len()).sum();
        let file_notes: usize = self.files.iter().map(|f| f.notes.len()).sum();
        write!(
            f,
            "total: {}, {}, {}",
            plural(chains, "chain", "chains"),
            plural(self.count(FindingKind::Placeholder), "placeholder", "placeholders"),
            plural(self.count(FindingKind::Note) + file_notes, "note", "notes")
        )?;
        let (links, unresolved) = (self.count(FindingKind::Link), self.unresolved_links().count());
        if links + unresolved > 0 {
            write!(f, ", {} resolved, {unresolved} unresolved", plural(links, "link", "links"))?;
        }
        let secrets = self.count(FindingKind::Secret);
        if secrets > 0 {
            write!(f, ", {}", plural(secrets, "secret", "secrets"))?;
        }
        writeln!(f)
    }
}
