//! `llm-jobs keys create|list|revoke`: API keys, managed on the database directly (so the
//! first operator key can be made before any key exists). Every change is audited with actor
//! `local`.

use std::sync::Arc;

use secrecy::ExposeSecret;

use crate::{
    audit::{self, Auditor},
    auth::{Role, keys},
    config,
    store::Store,
};

/// `keys` arguments.
#[derive(clap::Args, Debug)]
pub struct KeysArgs {
    #[command(flatten)]
    #[allow(missing_docs)]
    pub database: config::Database,
    /// What to do.
    #[command(subcommand)]
    pub command: KeysCommand,
}

/// Key operations.
#[derive(clap::Subcommand, Debug)]
pub enum KeysCommand {
    /// Make a key and print it once (stdout); only its hash is stored.
    Create {
        /// Tenant whose jobs the key sees.
        #[arg(long)]
        tenant: String,
        /// `user` (its tenant's jobs), `admin` (also its tenant's failed jobs and audit events)
        /// or `operator` (every tenant, all of QueueAdminService).
        #[arg(long, value_enum, ignore_case = true, default_value_t = Role::User)]
        role: Role,
        /// A label for humans.
        #[arg(long, default_value = "")]
        name: String,
        /// This key's requests per minute (default: the server's).
        #[arg(long = "requests-per-minute", allow_negative_numbers = true)]
        requests_per_minute: Option<u32>,
        /// This key's unfinished jobs at once (default: the server's).
        #[arg(long = "max-concurrent-jobs", allow_negative_numbers = true)]
        max_concurrent_jobs: Option<u32>,
    },
    /// List keys (prefix, tenant, role, name, limits, created, revoked); never secrets.
    List {
        /// Only this tenant's keys.
        #[arg(long, value_parser = crate::cli::parse_filter)]
        tenant: Option<String>,
    },
    /// Revoke a key by its prefix (or the whole key); its next request is UNAUTHENTICATED.
    Revoke {
        /// The 12-digit prefix shown by `keys list`, or the key itself.
        key: String,
    },
}

/// What `local` key operations are recorded as.
fn local() -> crate::auth::Principal {
    let mut p = crate::auth::Principal::auth_off("local".into());
    p.actor = "local".into();
    p
}

/// Runs a `keys` command.
///
/// Errors: the database is unreachable, migrations fail, the key is unknown; `list` and
/// `revoke` on a SQLite file that does not exist.
pub async fn run(a: KeysArgs) -> anyhow::Result<()> {
    // Only `create` may make the store (before the server's first start).
    if !matches!(a.command, KeysCommand::Create { .. }) {
        a.database.require_existing().map_err(anyhow::Error::msg)?;
    }
    if !a.database.no_migrate {
        crate::app::migrate(&a.database).await?;
    }
    let store: Arc<dyn Store> = crate::store::open(&a.database).await?;
    let auditor = Auditor::new(store.clone());
    match a.command {
        KeysCommand::Create {
            tenant,
            role,
            name,
            requests_per_minute,
            max_concurrent_jobs,
        } => {
            let key = create(
                store.as_ref(),
                &tenant,
                role,
                &name,
                keys::KeyLimits {
                    requests_per_minute,
                    max_concurrent_jobs,
                },
            )
            .await?;
            eprintln!(
                "created {} key {} for tenant {tenant} in {}; it is shown once, store it now:",
                role.as_str(),
                key.stored.prefix,
                crate::store::describe(&a.database)
            );
            println!("{}", key.key.expose_secret());
            Ok(())
        }
        KeysCommand::List { tenant } => {
            print_keys(&store.list_api_keys(tenant.as_deref()).await?);
            Ok(())
        }
        KeysCommand::Revoke { key } => revoke(store.as_ref(), &auditor, &key).await,
    }
}

/// Prints `keys` as a table, one key a line.
fn print_keys(keys: &[keys::ApiKey]) {
    println!(
        "{:<14} {:<16} {:<8} {:<20} {:>8} {:>8} {:<20} REVOKED",
        "PREFIX", "TENANT", "ROLE", "NAME", "RPM", "JOBS", "CREATED"
    );
    let limit = |v: Option<u32>| v.map_or_else(|| "default".to_owned(), |v| v.to_string());
    for k in keys {
        println!(
            "{:<14} {:<16} {:<8} {:<20} {:>8} {:>8} {:<20} {}",
            k.prefix,
            k.tenant,
            k.role.as_str(),
            k.name,
            limit(k.limits.requests_per_minute),
            limit(k.limits.max_concurrent_jobs),
            k.created_at.format("%Y-%m-%d %H:%M:%S"),
            k.revoked_at.map_or_else(
                || "-".to_owned(),
                |t| t.format("%Y-%m-%d %H:%M:%S").to_string()
            )
        );
    }
}

/// Revokes the key `key` (a whole key or its prefix) and audits that.
///
/// Errors: the store failed, or no key has that prefix.
async fn revoke(store: &dyn Store, auditor: &Auditor, key: &str) -> anyhow::Result<()> {
    let prefix = keys::parse(key).map_or(key, |(prefix, _)| prefix);
    let revoked = store.revoke_api_key(prefix).await?;
    let mut who = local();
    let outcome = match &revoked {
        Some(k) => {
            who.tenant = k.tenant.clone();
            audit::Outcome::Ok
        }
        None => audit::Outcome::Error,
    };
    auditor
        .record(&who, "keys.revoke", prefix, outcome, "")
        .await;
    let k = revoked.ok_or_else(|| anyhow::anyhow!("no key with prefix {prefix}"))?;
    println!(
        "revoked {} (tenant {}, {})",
        k.prefix,
        k.tenant,
        k.role.as_str()
    );
    Ok(())
}

/// Makes a key, stores its hash and audits that (actor `local`); returns the key (to show
/// once) and what was stored.
///
/// Errors: the random source or the store failed.
pub async fn create(
    store: &dyn Store,
    tenant: &str,
    role: Role,
    name: &str,
    limits: keys::KeyLimits,
) -> anyhow::Result<keys::Generated> {
    anyhow::ensure!(
        !tenant.trim().is_empty() && tenant.len() <= 128 && !tenant.chars().any(char::is_control),
        "--tenant must be 1..=128 bytes, not only spaces, without control characters"
    );
    let key = keys::generate(tenant, role, name, limits)
        .map_err(|e| anyhow::anyhow!("no random bytes from the operating system: {e}"))?;
    store.insert_api_key(&key.stored).await?;
    let mut who = local();
    who.tenant = tenant.to_owned();
    let event = audit::Event {
        id: 0,
        time: chrono::Utc::now(),
        actor: who.actor,
        tenant: who.tenant,
        action: "keys.create".into(),
        target: key.stored.prefix.clone(),
        peer: who.peer,
        outcome: audit::Outcome::Ok,
        detail: role.as_str().into(),
    };
    if let Err(e) = store.append_audit(&event).await {
        tracing::error!(error = %e, "cannot write the audit log");
    }
    Ok(key)
}
