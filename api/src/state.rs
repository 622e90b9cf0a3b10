//! What every request handler can reach.

use std::sync::Arc;

use depositd_core::config::Config;
use depositd_core::store::Store;

/// Shared by all handlers; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    pub config: Arc<Config>,
}
