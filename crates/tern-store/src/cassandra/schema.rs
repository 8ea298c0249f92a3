//! The Cassandra schema: fixed table names (documented in docs/cassandra.md), created at start-up
//! idempotently. Tables are created with a deterministic id (a name-based UUID of keyspace and
//! table): when several nodes start at once and all run `CREATE TABLE IF NOT EXISTS`, they all
//! create the very same table, so no schema conflict can arise.

use uuid::Uuid;

/// Bumped when a migration is added; stored in `schema_version`.
pub const SCHEMA_VERSION: i32 = 6;

/// Keyspace replication.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Replication {
    /// For development and single-datacenter tests.
    /// `SimpleStrategy` with `factor` replicas.
    Simple {
        /// Replicas of each row.
        factor: u32,
    },
    /// Production: a replication factor per datacenter.
    /// `NetworkTopologyStrategy`: (datacenter, replicas) pairs.
    NetworkTopology {
        /// (datacenter, replicas) pairs.
        datacenters: Vec<(String, u32)>,
    },
}

impl Replication {
    fn cql(&self) -> String {
        match self {
            Replication::Simple { factor } => {
                format!("{{'class': 'SimpleStrategy', 'replication_factor': {factor}}}")
            }
            Replication::NetworkTopology { datacenters } => {
                let dcs: Vec<String> = datacenters
                    .iter()
                    .map(|(dc, n)| format!("'{dc}': {n}"))
                    .collect();
                format!("{{'class': 'NetworkTopologyStrategy', {}}}", dcs.join(", "))
            }
        }
    }
}

/// (table name, column definitions and options) of every table.
const TABLES: &[(&str, &str)] = &[
    (
        "schema_version",
        "(component text PRIMARY KEY, version int, updated_at timestamp)",
    ),
    ("domains", "(domain text PRIMARY KEY)"),
    (
        "users",
        "(name text PRIMARY KEY, password_hash text, inbox_id uuid)",
    ),
    (
        "mailboxes",
        "(user text, name text, mailbox_id uuid, PRIMARY KEY ((user), name))",
    ),
    (
        "blobs",
        "(blob_id uuid, chunk int, data blob, size bigint STATIC, chunk_count int STATIC, \
         refs set<timeuuid> STATIC, PRIMARY KEY ((blob_id), chunk))",
    ),
    // Version 2: bodies being received, so that the collector leaves them alone on every node.
    // Written with a TTL (refreshed while the body arrives), removed once the body is referenced.
    ("bodies_in_flight", "(blob_id uuid PRIMARY KEY)"),
    (
        "messages",
        "(message_id timeuuid PRIMARY KEY, mailbox_id uuid, blob_id uuid, size bigint, uid bigint, \
         header blob)",
    ),
    (
        "pop3_view",
        "(mailbox_id uuid, message_id timeuuid, size bigint, uidl text, \
         PRIMARY KEY ((mailbox_id), message_id)) WITH CLUSTERING ORDER BY (message_id ASC)",
    ),
    (
        "messages_by_uid",
        "(mailbox_id uuid, uid bigint, message_id timeuuid, size bigint, \
         PRIMARY KEY ((mailbox_id), uid)) WITH CLUSTERING ORDER BY (uid ASC)",
    ),
    (
        "mailbox_uids",
        "(mailbox_id uuid PRIMARY KEY, next_uid bigint, validity bigint)",
    ),
    (
        "tasks",
        "(task_id uuid PRIMARY KEY, record text, cancel_requested boolean)",
    ),
    // Version 3: the outbound queue (see cassandra/queue.rs and docs/cassandra.md).
    (
        "outbound_queue",
        "(dc text, shard int, slice bigint, queue_id timeuuid, record text, \
         PRIMARY KEY ((dc, shard, slice), queue_id))",
    ),
    (
        "outbound_slices",
        "(dc text, shard int, slice bigint, PRIMARY KEY ((dc, shard), slice)) \
         WITH CLUSTERING ORDER BY (slice ASC)",
    ),
    (
        "outbound_leases",
        "(dc text, shard int, owner text, PRIMARY KEY ((dc), shard))",
    ),
    (
        "outbound_nodes",
        "(dc text, node text, PRIMARY KEY ((dc), node))",
    ),
    // Version 4: recipient rewriting (aliases, forwards, groups, domain aliases).
    (
        "mappings",
        "(source text, kind text, target text, PRIMARY KEY ((source), kind, target))",
    ),
    // Version 5: quotas (limits, and usage kept with counters).
    (
        "quota_limits",
        "(scope text, resource text, quota_limit bigint, PRIMARY KEY ((scope), resource))",
    ),
    (
        "mailbox_usage",
        "(mailbox_id uuid PRIMARY KEY, message_count counter, octets counter)",
    ),
    // Version 6: mail repositories (mail processing could not deliver, kept for operators).
    ("mail_repositories", "(name text PRIMARY KEY)"),
    (
        "repository_mails",
        "(repository text, mail_key timeuuid, record text, PRIMARY KEY ((repository), mail_key)) \
         WITH CLUSTERING ORDER BY (mail_key ASC)",
    ),
];

/// Columns added to existing tables, with the version that added them: (table, column, type).
/// New keyspaces get them from [`TABLES`]; older ones by `ALTER TABLE` at start-up.
pub const ADDED_COLUMNS: &[(&str, &str, &str)] = &[
    // Version 6: a copy's own header (Delivered-To, Authentication-Results) before the body.
    ("messages", "header", "blob"),
];

/// A stable id for a table of a keyspace (UUID v5 in a Tern namespace).
fn table_id(keyspace: &str, table: &str) -> Uuid {
    const TERN_NAMESPACE: Uuid = Uuid::from_u128(0x7465_726e_2d73_6368_656d_612d_7631_0001);
    Uuid::new_v5(&TERN_NAMESPACE, format!("{keyspace}.{table}").as_bytes())
}

/// The statements that create the schema, in order.
pub fn statements(keyspace: &str, replication: &Replication) -> Vec<String> {
    let mut out = vec![format!(
        "CREATE KEYSPACE IF NOT EXISTS {keyspace} WITH replication = {}",
        replication.cql()
    )];
    for (table, definition) in TABLES {
        let id = table_id(keyspace, table);
        let with = if definition.contains(" WITH ") {
            " AND"
        } else {
            " WITH"
        };
        out.push(format!(
            "CREATE TABLE IF NOT EXISTS {keyspace}.{table} {definition}{with} ID = {id}"
        ));
    }
    out
}

/// The schema as a CQL script, for operators who apply it by hand.
pub fn script(keyspace: &str, replication: &Replication) -> String {
    let mut s = String::from("-- Tern schema, version ");
    s.push_str(&SCHEMA_VERSION.to_string());
    s.push('\n');
    for st in statements(keyspace, replication) {
        s.push_str(&st);
        s.push_str(";\n");
    }
    s.push_str("-- A keyspace created by an older Tern also needs these (an error saying the column\n-- exists means it is there already):\n");
    for (table, column, cql_type) in ADDED_COLUMNS {
        s.push_str(&format!(
            "-- ALTER TABLE {keyspace}.{table} ADD {column} {cql_type};\n"
        ));
    }
    s.push_str(&format!(
        "INSERT INTO {keyspace}.schema_version (component, version, updated_at) VALUES ('tern', {SCHEMA_VERSION}, toTimestamp(now()));\n"
    ));
    s
}

/// Checks a keyspace name (it is spliced into CQL).
pub fn valid_keyspace(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 48
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        && name.as_bytes()[0].is_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn script_names_every_table_with_stable_ids() {
        let s = script("tern", &Replication::Simple { factor: 1 });
        for (t, _) in TABLES {
            assert!(
                s.contains(&format!("CREATE TABLE IF NOT EXISTS tern.{t} ")),
                "{t}"
            );
        }
        assert_eq!(table_id("tern", "blobs"), table_id("tern", "blobs"));
        assert_ne!(table_id("tern", "blobs"), table_id("other", "blobs"));
        assert!(s.contains("CLUSTERING ORDER BY (message_id ASC) AND ID = "));
        let nts = Replication::NetworkTopology {
            datacenters: vec![("dc1".into(), 3), ("dc2".into(), 3)],
        };
        assert!(script("tern", &nts).contains("'NetworkTopologyStrategy', 'dc1': 3, 'dc2': 3"));
    }

    #[test]
    fn keyspace_names() {
        assert!(valid_keyspace("tern") && valid_keyspace("tern_test_1"));
        assert!(!valid_keyspace("Tern") && !valid_keyspace("1x") && !valid_keyspace("a;drop"));
    }
}
