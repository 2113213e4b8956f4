//! The harness of the store's contract: one check, written once as an async function over
//! `&dyn Store`, run on both SQL backends in the same pass. [`store_contract!`] turns every
//! check into two tests, whatever `LLMJOBS_TEST_BACKEND` says:
//! - `contract::<file>::sqlite::<check>`: a fresh SQLite file, migrated, in a directory of its
//!   own under the system's temporary directory (`llmjobs_it_contract_…`);
//! - `contract::<file>::servers::postgres::<check>`: a fresh database on the test Postgres
//!   (`LLMJOBS_TEST_POSTGRES_URL`; `llmjobs_it_contract_…`, a name `.ci/run` clears when an
//!   interrupted run left it), created and migrated by `store::migrate`. It sits in a
//!   `servers` module, which the embedded pass filters out by name.
//!
//! Passed or failed (or panicked), the check's file or database goes when the check ends.

use std::{future::Future, panic::AssertUnwindSafe, path::PathBuf, sync::Arc};

use anyhow::Context;
use futures::FutureExt;
use llm_jobs::store::Store;

/// What a store backend leaves behind, to remove when the check ends.
enum Scratch {
    /// The directory holding the SQLite file.
    Dir(PathBuf),
    /// The Postgres database's name.
    Database(String),
}

/// A freshly migrated, empty store.
pub(crate) struct StoreBackend {
    store: Arc<dyn Store>,
    scratch: Scratch,
}

impl StoreBackend {
    /// A SQLite file in a new directory of its own.
    pub(crate) async fn sqlite() -> anyhow::Result<StoreBackend> {
        let dir = std::env::temp_dir().join(format!(
            "llmjobs_it_contract_{}",
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::create_dir_all(&dir)?;
        let url = format!("sqlite://{}", dir.join("store.db").display());
        let store = open(&url).await?;
        Ok(StoreBackend {
            store,
            scratch: Scratch::Dir(dir),
        })
    }

    /// A new database on the test Postgres. Errors, naming the URL, when it does not answer.
    pub(crate) async fn postgres() -> anyhow::Result<StoreBackend> {
        let database = format!("llmjobs_it_contract_{}", uuid::Uuid::new_v4().simple());
        let server = crate::support::postgres_server_url();
        let store = open(&format!("{server}/{database}"))
            .await
            .with_context(|| {
                format!(
                    "the Postgres half of the store contract needs the test Postgres at \
                     {server} (LLMJOBS_TEST_POSTGRES_URL); the embedded pass leaves it out \
                     with `-- --skip ::servers::`"
                )
            })?;
        Ok(StoreBackend {
            store,
            scratch: Scratch::Database(database),
        })
    }

    /// Removes the SQLite directory or drops the Postgres database.
    async fn clean(self) -> anyhow::Result<()> {
        drop(self.store);
        match self.scratch {
            Scratch::Dir(dir) => Ok(std::fs::remove_dir_all(dir)?),
            Scratch::Database(database) => crate::store::drop_database(&database).await,
        }
    }
}

/// Migrates and opens the store at `url`, as `llm-jobs migrate` and `serve` do.
async fn open(url: &str) -> anyhow::Result<Arc<dyn Store>> {
    let cfg = llm_jobs::config::Database {
        url: url.to_owned(),
        sqlite_path: Default::default(),
        pool_size: 2,
        no_migrate: false,
    };
    llm_jobs::store::migrate(&cfg).await?;
    Ok(llm_jobs::store::open(&cfg).await?)
}

/// Runs `check` on `backend`'s store, then removes the store whether the check passed,
/// failed or panicked, and reports the check's outcome.
pub(crate) async fn run<F, Fut>(backend: StoreBackend, check: F) -> anyhow::Result<()>
where
    F: FnOnce(Arc<dyn Store>) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let outcome = AssertUnwindSafe(check(backend.store.clone()))
        .catch_unwind()
        .await;
    let cleaned = backend.clean().await;
    match outcome {
        Err(panic) => std::panic::resume_unwind(panic),
        Ok(result) => result.and(cleaned),
    }
}

/// Turns each listed check (an async fn of this file taking `&dyn Store`) into a test on each
/// SQL backend: `sqlite::<check>` and `servers::postgres::<check>`.
macro_rules! store_contract {
    ($($check:ident;)+) => {
        /// The checks on a SQLite file.
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $check() -> anyhow::Result<()> {
                    let backend = crate::contract::stores::StoreBackend::sqlite().await?;
                    crate::contract::stores::run(backend, |store| async move {
                        super::$check(&*store).await
                    })
                    .await
                }
            )+
        }

        /// Tests about Postgres itself: the embedded pass filters them out by name
        /// (`-- --skip ::servers::`).
        mod servers {
            /// The checks on a Postgres database.
            mod postgres {
                $(
                    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                    async fn $check() -> anyhow::Result<()> {
                        let backend = crate::contract::stores::StoreBackend::postgres().await?;
                        crate::contract::stores::run(backend, |store| async move {
                            super::super::$check(&*store).await
                        })
                        .await
                    }
                )+
            }
        }
    };
}
pub(crate) use store_contract;
