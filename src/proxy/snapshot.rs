//! Everything a request reads from the config, built off the request path
//! and published with one `ArcSwap::store`. A request loads the snapshot
//! once, so it never sees half of an old config and half of a new one.

use std::sync::Arc;

use crate::config::{Config, PoolName};
use crate::metrics::Metrics;
use crate::proxy::split::Splitter;
use crate::proxy::upstream::{self, Pool};

pub struct Snapshot {
    /// Increments with every successful load or reload.
    pub version: u64,
    pub config: Arc<Config>,
    pub splitter: Splitter,
    pools: [Arc<Pool>; 2],
}

impl Snapshot {
    /// Build a snapshot. Pools whose config did not change are carried over
    /// from `previous` as they are (connections, health, counters); changed
    /// pools keep the endpoints they still list.
    pub fn build(config: Config, version: u64, previous: Option<&Snapshot>, metrics: &Metrics) -> Snapshot {
        let pools = PoolName::ALL.map(|name| {
            let wanted = config.pool(name);
            let prev = previous.map(|p| p.pool(name));
            match prev {
                Some(p) if &p.config == wanted => p.clone(),
                _ => {
                    let pool = Pool::build(name, wanted, prev.map(|p| &**p), metrics);
                    upstream::spawn_health_checks(&pool);
                    pool
                }
            }
        });
        Snapshot { version, splitter: Splitter::new(&config.split), config: Arc::new(config), pools }
    }

    pub fn pool(&self, name: PoolName) -> &Arc<Pool> {
        &self.pools[name.index()]
    }
}
