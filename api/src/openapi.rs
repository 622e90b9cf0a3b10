//! The OpenAPI 3.1 document, generated from the handlers and types (utoipa) and served at
//! `GET /openapi.json`. A test validates real responses against it.

use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ObjectBuilder, OneOfBuilder, RefOr, Schema, schema::Type};
use utoipa::{Modify, OpenApi};

use crate::routes::{deposits, invoices, ledger, payments, payouts, static_addresses, webhooks};

#[derive(OpenApi)]
#[openapi(
    info(title = "depositd merchant API", description = "Invoices, static addresses, balances, the ledger, deposits, payouts and refunds, webhook endpoints and events."),
    paths(
        invoices::create, invoices::get, invoices::list, invoices::cancel,
        static_addresses::create, static_addresses::get, static_addresses::list, static_addresses::disable,
        ledger::balances, ledger::list, deposits::list, deposits::get,
        webhooks::create, webhooks::list, webhooks::get, webhooks::update, webhooks::delete, webhooks::rotate_secret,
        webhooks::rotate_callback_secret, webhooks::list_events, webhooks::get_event, webhooks::redeliver,
        payments::get, payments::answer,
        payouts::create, payouts::get, payouts::list, payouts::cancel, payouts::create_refund,
    ),
    components(schemas(
        crate::error::ErrorBody, depositd_core::money::BaseUnits, depositd_core::payout::PayoutResource,
        payouts::CreatePayout, payouts::CreateRefund, payouts::PayoutList,
    )),
    modifiers(&SecuritySchemes)
)]
pub struct ApiDoc;

struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components
            .add_security_scheme("api_key", SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("x-api-key"))));
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// `amount`: a decimal string or a JSON number.
pub fn amount_schema() -> impl Into<RefOr<Schema>> {
    OneOfBuilder::new()
        .item(ObjectBuilder::new().schema_type(Type::String).pattern(Some(r"^[0-9]+(\.[0-9]+)?$")))
        .item(ObjectBuilder::new().schema_type(Type::Number).minimum(Some(0.01)))
}

/// The document as JSON.
pub fn document() -> serde_json::Value {
    serde_json::to_value(ApiDoc::openapi()).expect("the OpenAPI document serializes")
}
