//! Recipient rewriting, as James's recipient rewrite table: a source (an address, or a domain)
//! maps to targets of a kind. Resolution (aliases, forwards, groups, domain aliases, recursion
//! and loop detection) is the server's; the store keeps the table.

use crate::Result;
use async_trait::async_trait;

/// The kind of a mapping, with James's names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum MappingKind {
    /// An untyped address mapping (`/mappings/address`).
    Address,
    /// `alias@d` is another name of a user.
    Alias,
    /// A user's mail also (or instead) goes to these addresses.
    Forward,
    /// A virtual address whose mail goes to every member.
    Group,
    /// Every address of a domain is rewritten to another domain (`/domainMappings`).
    Domain,
    /// A domain is another name of a served domain (`/domains/{d}/aliases`).
    DomainAlias,
}

impl MappingKind {
    /// Every kind.
    pub const ALL: [MappingKind; 6] = [
        MappingKind::Address,
        MappingKind::Alias,
        MappingKind::Forward,
        MappingKind::Group,
        MappingKind::Domain,
        MappingKind::DomainAlias,
    ];

    /// James's name (`"Alias"`), as the routes show it and the stores keep it.
    pub fn name(self) -> &'static str {
        match self {
            MappingKind::Address => "Address",
            MappingKind::Alias => "Alias",
            MappingKind::Forward => "Forward",
            MappingKind::Group => "Group",
            MappingKind::Domain => "Domain",
            MappingKind::DomainAlias => "DomainAlias",
        }
    }

    /// The kind of a name, case-insensitively (`"group"` as in `?type=group`).
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|k| k.name().eq_ignore_ascii_case(name))
    }

    /// Whether the source and the target are domains rather than addresses.
    pub fn is_domain(self) -> bool {
        matches!(self, MappingKind::Domain | MappingKind::DomainAlias)
    }
}

/// One target of a source.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Mapping {
    /// Its kind.
    pub kind: MappingKind,
    /// An address, or a domain for the domain kinds (lower-case).
    pub target: String,
}

impl Mapping {
    /// A mapping of that kind to that target.
    pub fn new(kind: MappingKind, target: impl Into<String>) -> Self {
        Self {
            kind,
            target: target.into(),
        }
    }
}

/// The recipient rewrite table.
#[async_trait]
pub trait RecipientRewrites: Send + Sync {
    /// Adds a mapping; adding one that exists is not an error.
    async fn add_mapping(&self, source: &str, mapping: &Mapping) -> Result<()>;
    /// Removes a mapping; returns whether it existed.
    async fn remove_mapping(&self, source: &str, mapping: &Mapping) -> Result<bool>;
    /// The mappings of a source (what RCPT resolution reads), in no particular order.
    async fn mappings(&self, source: &str) -> Result<Vec<Mapping>>;
    /// Every mapping, as `(source, mapping)` (administration; the table is small).
    async fn all_mappings(&self) -> Result<Vec<(String, Mapping)>>;
}
