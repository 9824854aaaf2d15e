//! PostgreSQL adapters of the ports (the embedded hot store).

mod hot_store;

pub use hot_store::PgHotStore;
