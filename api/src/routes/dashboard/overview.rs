//! `GET /dashboard`: the overview, balances per chain and asset (the API's balances,
//! `routes::ledger::merchant_balances`, rendered).

use askama::Template;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use depositd_core::member::Action;

use super::{Chrome, SignedIn, internal, render};
use crate::state::AppState;

/// One balance row as shown.
struct BalanceRow {
    chain: String,
    asset: String,
    available: String,
    pending: String,
    reserved: String,
}

#[derive(Template)]
#[template(path = "dashboard/overview.html")]
struct OverviewPage {
    chrome: Option<Chrome>,
    balances: Vec<BalanceRow>,
}

pub async fn page(State(state): State<AppState>, signed_in: SignedIn) -> Response {
    if let Err(refused) = signed_in.require(Action::Read) {
        return *refused;
    }
    let balances = match crate::routes::ledger::merchant_balances(&state, signed_in.merchant.id).await {
        Ok(balances) => balances,
        Err(error) => return internal(error),
    };
    let shown = |amount: &Option<String>| amount.clone().unwrap_or_else(|| "?".into());
    let balances = balances
        .iter()
        .map(|b| BalanceRow {
            chain: b.chain.clone().unwrap_or_else(|| "(chain not enabled)".into()),
            asset: b.asset.clone(),
            available: shown(&b.available),
            pending: shown(&b.pending),
            reserved: shown(&b.reserved),
        })
        .collect();
    render(StatusCode::OK, &OverviewPage { chrome: Some(signed_in.chrome("overview")), balances })
}
