//! The OpenAPI 3.1 document, generated from the handlers and types (utoipa) and served at
//! `GET /openapi.json`. A test validates real responses against it.

use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use depositd_core::api_key::Scope;
use depositd_core::config::Config;
use depositd_core::webhooks::EVENT_TYPES;

use crate::routes::{
    api_keys, create_invoice, deposits, hosted_payments, invoices, ledger, operator, payments, payouts,
    static_addresses, webhooks,
};

#[derive(OpenApi)]
#[openapi(
    info(title = "depositd merchant API", description = "Invoices, static addresses, balances, the ledger, deposits, payouts and refunds, webhook endpoints and events, API keys. One invoice, three request shapes: seed 001's /api/v1/invoices (amounts in major units), seed 003's /api/v1/create-invoice and seed 004's /api/v1/hosted-payments (amounts in cents)."),
    paths(
        invoices::create, invoices::get, invoices::list, invoices::cancel, invoices::mark,
        create_invoice::create, create_invoice::status, hosted_payments::create, hosted_payments::get,
        static_addresses::create, static_addresses::get, static_addresses::list, static_addresses::disable,
        ledger::balances, ledger::list, deposits::list, deposits::get,
        webhooks::create, webhooks::list, webhooks::get, webhooks::update, webhooks::delete, webhooks::rotate_secret,
        webhooks::rotate_callback_secret, webhooks::list_events, webhooks::get_event, webhooks::redeliver,
        payments::get, payments::answer, payments::events,
        payouts::create, payouts::get, payouts::list, payouts::cancel, payouts::create_refund,
        operator::list, operator::resolve,
        api_keys::create, api_keys::list, api_keys::get, api_keys::revoke,
    ),
    components(schemas(
        crate::error::ErrorBody, depositd_core::money::BaseUnits, depositd_core::payout::PayoutResource,
        payouts::CreatePayout, payouts::CreateRefund, payouts::PayoutList,
        operator::ResolveDeposit, operator::ResolveAction, depositd_core::resolution::ResolutionResource,
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

/// The document as JSON, with what the derive cannot say added (see [`tighten`]).
pub fn document() -> serde_json::Value {
    let mut document = serde_json::to_value(ApiDoc::openapi()).expect("the OpenAPI document serializes");
    tighten(&mut document);
    document
}

/// The document this server serves: [`document`] with the chains, assets and currencies it is
/// configured with as enums.
pub fn document_for(config: &Config) -> serde_json::Value {
    let mut document = document();
    let chains: Vec<&str> = config.chains.iter().map(|c| c.name.as_str()).collect();
    let mut assets: Vec<String> =
        config.chains.iter().flat_map(|c| c.asset_symbols()).map(str::to_owned).collect::<Vec<_>>();
    assets.sort();
    assets.dedup();
    // What the pricer can price without a feed: the static rates, USD-pegged assets, the assets.
    let currencies: Option<Vec<String>> = config.settings.pricing.feed_url.is_none().then(|| {
        let pricing = &config.settings.pricing;
        let mut currencies: Vec<String> = pricing.static_usd_rates.keys().cloned().collect();
        currencies.extend(pricing.usd_pegged.iter().cloned());
        currencies.extend(assets.iter().cloned());
        currencies.sort();
        currencies.dedup();
        currencies
    });
    for_each_schema_property(&mut document, &mut |name, schema| match name {
        "chain" => set_enum(schema, &chains),
        "asset" => set_enum(schema, &assets),
        "currency" => {
            if let Some(currencies) = &currencies {
                set_enum(schema, currencies)
            }
        }
        _ => {}
    });
    let scheme = |allow_http: bool| if allow_http { "https?" } else { "https" };
    let url_pattern = |allow_http: bool| {
        format!(
            "^{}://(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?\\.)*[A-Za-z](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?::[1-9][0-9]{{0,3}})?(?:[/?#][!-~]*)?$",
            scheme(allow_http)
        )
    };
    let (page_urls, endpoint_urls) =
        (url_pattern(config.settings.invoices.allow_http_urls), url_pattern(config.settings.webhooks.allow_http));
    let max_expires_in = config.settings.invoices.max_expires_in_ms;
    if let Some(schemas) =
        document.get_mut("components").and_then(|c| c.get_mut("schemas")).and_then(|s| s.as_object_mut())
    {
        for (name, schema) in schemas.iter_mut() {
            if !REQUESTS.contains(&name.as_str()) {
                continue;
            }
            let Some(properties) = schema.get_mut("properties").and_then(|p| p.as_object_mut()) else { continue };
            for (field, property) in properties.iter_mut() {
                match field.as_str() {
                    "return_url" | "success_url" | "fail_url" | "callback_url" => {
                        property["pattern"] = page_urls.clone().into();
                        property["maxLength"] = 2048.into();
                    }
                    "url" => {
                        property["pattern"] = endpoint_urls.clone().into();
                        property["maxLength"] = 2048.into();
                    }
                    "expires_in" => {
                        property["minimum"] = 1.into();
                        property["maximum"] = max_expires_in.into();
                    }
                    // Seed 004's cents: what the server accepts, the amount bounds in cents (a
                    // merchant may have narrower ones).
                    "amount" if name == "HostedPaymentRequest" => {
                        let max_cents =
                            (config.settings.invoices.max_amount * rust_decimal::Decimal::ONE_HUNDRED).floor();
                        property["maximum"] = u64::try_from(max_cents).unwrap_or(u64::MAX).into();
                    }
                    _ => {}
                }
            }
        }
    }
    // Seed 003 takes ISO 4217 codes only; seed 004 only "usd" (answered in lower case).
    if let Some(schemas) =
        document.get_mut("components").and_then(|c| c.get_mut("schemas")).and_then(|s| s.as_object_mut())
    {
        if let Some(currencies) = &currencies {
            let iso: Vec<&String> =
                currencies.iter().filter(|c| c.len() == 3 && c.bytes().all(|b| b.is_ascii_uppercase())).collect();
            if let Some(property) =
                schemas.get_mut("CreateInvoiceRequest").and_then(|s| s["properties"].get_mut("currency_code"))
            {
                set_enum(property, &iso);
            }
        }
        if let Some(property) =
            schemas.get_mut("HostedPaymentRequest").and_then(|s| s["properties"].get_mut("currency"))
        {
            *property = serde_json::json!({"type": "string", "enum": ["usd"], "description": "Only usd"});
        }
        if let Some(property) =
            schemas.get_mut("HostedPaymentResource").and_then(|s| s["properties"].get_mut("currency"))
        {
            *property = serde_json::json!({"type": "string", "description": "The currency code in lower case: usd"});
        }
    }
    for_each_parameter(&mut document, &mut |_, _, parameter| match parameter["name"].as_str() {
        Some("chain") => set_enum_at(parameter, &chains),
        Some("asset") => set_enum_at(parameter, &assets),
        _ => {}
    });
    document
}

const UUID_PATTERN: &str = "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$";

/// What the handlers' annotations leave out, applied to every operation alike:
/// - the errors every authenticated request can get (400 for a bad path id, query or body; 401;
///   403 for a missing scope; 429 from the per-key and failed-authentication limits), and 400/401
///   on the payer session routes;
/// - `limit` as the integer 1 to 100 it is, ids as UUID patterns, the `Idempotency-Key` format;
/// - enums for the query parameters that take a fixed set of words;
/// - query parameters are absent or a value, never `null`.
fn tighten(document: &mut serde_json::Value) {
    let error = serde_json::json!({
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}
    });
    let with = |description: &str| {
        let mut response = error.clone();
        response["description"] = description.into();
        response
    };
    let Some(paths) = document.get_mut("paths").and_then(|p| p.as_object_mut()) else { return };
    for (path, item) in paths.iter_mut() {
        let Some(operations) = item.as_object_mut() else { continue };
        for (_, operation) in operations.iter_mut() {
            let api_key = operation.get("security").and_then(|s| s.as_array()).is_some_and(|s| !s.is_empty());
            let session = path.starts_with("/api/v1/payments/");
            let mut add = |status: &str, description: &str| {
                let responses =
                    operation.get_mut("responses").and_then(|r| r.as_object_mut()).expect("operations have responses");
                responses.entry(status).or_insert_with(|| with(description));
            };
            if api_key || session {
                add(
                    "400",
                    "Invalid request: a path id, query parameter, header or body field (the error's `param` names it)",
                );
                add(
                    "401",
                    if session { "No valid session for this invoice" } else { "Missing, invalid or revoked API key" },
                );
            }
            if api_key {
                add("403", "The API key lacks the scope this endpoint needs");
                add(
                    "429",
                    "Rate limited (per API key, or too many failed authentications from this address); see Retry-After",
                );
            }
        }
    }
    for_each_parameter(document, &mut |path, _, parameter| {
        let name = parameter["name"].as_str().unwrap_or_default().to_owned();
        let location = parameter["in"].as_str().unwrap_or_default().to_owned();
        let Some(schema) = parameter.get_mut("schema") else { return };
        if location == "query" {
            drop_null(schema);
        }
        if schema["format"] == "uuid" {
            schema["pattern"] = UUID_PATTERN.into();
        }
        match (location.as_str(), name.as_str()) {
            ("query", "limit") => {
                *schema = serde_json::json!({"type": "integer", "minimum": 1, "maximum": 100, "default": 20});
            }
            ("header", "Idempotency-Key") => {
                *schema = serde_json::json!({
                    "type": "string", "minLength": 1, "maxLength": 255, "pattern": "^[!-~]+$"
                });
                parameter["description"] = "1 to 255 visible ASCII characters. Safe retries: the same key and body \
                    replay the first response; the same key with another body is a 409"
                    .into();
            }
            ("query", "delivery_state") => set_enum(schema, &["pending", "succeeded", "failed"]),
            ("query", "format") => set_enum(schema, &["json", "csv"]),
            ("query", "type") if path == "/api/v1/events" => set_enum(schema, EVENT_TYPES),
            ("query", "state") if path == "/api/v1/deposits" || path == "/api/v1/operator/deposits" => {
                set_enum(schema, &["detected", "confirmed", "reorged", "reversed", "rejected"])
            }
            ("query", "status") if path == "/api/v1/payouts" => {
                set_enum(schema, &["pending", "submitted", "confirmed", "failed", "cancelled"])
            }
            _ => {}
        }
    });
    for_each_schema_property(document, &mut |name, schema| {
        if name == "enabled_events"
            && let Some(items) = schema.get_mut("items")
        {
            set_enum(items, EVENT_TYPES);
        }
    });
    if let Some(schemas) =
        document.get_mut("components").and_then(|c| c.get_mut("schemas")).and_then(|s| s.as_object_mut())
    {
        for (name, schema) in schemas.iter_mut() {
            if REQUESTS.contains(&name.as_str()) {
                request_rules(name, schema);
            }
        }
    }
}

/// The request bodies, whose fields get the server's rules.
const REQUESTS: &[&str] = &[
    "CreateInvoice",
    "CreateInvoiceRequest",
    "HostedPaymentRequest",
    "CreateStaticAddress",
    "CreatePayout",
    "CreateRefund",
    "MarkInvoice",
    "ResolveDeposit",
    "CreateWebhookEndpoint",
    "UpdateWebhookEndpoint",
    "Answers",
    "CreateApiKey",
];

/// Text the server takes: no control characters but tab and newline (`validate::text`).
const TEXT_PATTERN: &str = "^[^\\u0000-\\u0008\\u000B-\\u001F\\u007F-\\u009F]*$";
/// A decimal amount at least 0.01 with at most 18 places, below 100000000.
const INVOICE_AMOUNT_PATTERN: &str = "^(?:[1-9][0-9]{0,7}(?:\\.[0-9]{1,18})?|0?\\.(?:[1-9][0-9]?|0[1-9])[0-9]{0,16}|0\\.(?:[1-9][0-9]?|0[1-9])[0-9]{0,16})$";
/// A positive decimal amount of whole tokens (at most 6 places: every asset has at least 6).
const TOKEN_AMOUNT_PATTERN: &str = "^(?=[0-9.]*[1-9])[0-9]{1,30}(?:\\.[0-9]{1,6})?$";

fn request_rules(name: &str, schema: &mut serde_json::Value) {
    let Some(properties) = schema.get_mut("properties").and_then(|p| p.as_object_mut()) else { return };
    for (field, property) in properties.iter_mut() {
        let text = |property: &mut serde_json::Value, max: u64| {
            property["minLength"] = 1.into();
            property["maxLength"] = max.into();
            property["pattern"] = TEXT_PATTERN.into();
        };
        match field.as_str() {
            "description" | "title" | "footer" | "purpose" | "customer_name" => text(property, 255),
            "name" if name == "CreateApiKey" => text(property, 100),
            "mode" if name == "CreateApiKey" => set_enum(property, &["test", "live"]),
            "scopes" if name == "CreateApiKey" => {
                property["minItems"] = 1.into();
                if let Some(items) = property.get_mut("items") {
                    let words: Vec<&str> = Scope::ALL.iter().map(|s| s.as_str()).collect();
                    set_enum(items, &words);
                }
            }
            "reason" => {
                text(property, 500);
                // Not blank: at least one character that is not white space.
                property["pattern"] = "^(?=[\\s\\S]*\\S)[^\\u0000-\\u0008\\u000B-\\u001F\\u007F-\\u009F]*$".into();
            }
            // Seed 001 allows 255 characters; seed 003 (and the other resources) 128.
            "customer_id" if name == "CreateInvoice" => text(property, 255),
            "customer_id" | "external_id" => text(property, 128),
            "customer_email" => {
                property["maxLength"] = 255.into();
                property["pattern"] = "^[^@\\s\\u0000-\\u001F\\u007F-\\u009F]+@[^@\\s.\\u0000-\\u001F\\u007F-\\u009F][^@\\s\\u0000-\\u001F\\u007F-\\u009F]*\\.[^@\\s\\u0000-\\u001F\\u007F-\\u009F]*[^@\\s.\\u0000-\\u001F\\u007F-\\u009F]$".into();
            }
            "receiver_override_address" | "destination" | "address" => {
                property["format"] = "evm-address".into();
                property["minLength"] = 42.into();
                property["maxLength"] = 42.into();
                let description = property["description"].as_str().unwrap_or_default().to_owned();
                property["description"] = format!(
                    "{description} `evm-address`: 0x and 40 hex digits, all lowercase, all uppercase or a valid EIP-55 \
                     checksum; never the zero address"
                )
                .trim_start()
                .into();
            }
            "metadata" if name == "CreateInvoice" => {
                *property = serde_json::json!({
                    "type": ["object", "null"],
                    "description": "Structured data: at most 50 keys of 1 to 40 characters, values any JSON (nested objects and arrays, at most 8 levels), at most 5,120 bytes serialized",
                    "maxProperties": 50,
                    "propertyNames": {"minLength": 1, "maxLength": 40},
                    "example": {"order_id": "ORD-123", "items": [{"id": "SKU-1", "qty": 2}]}
                });
            }
            "metadata" => {
                *property = serde_json::json!({
                    "type": ["object", "null"],
                    "description": "At most 50 keys of 1 to 40 characters with string, number or boolean values, at most 5 KB serialized",
                    "maxProperties": 50,
                    "propertyNames": {"minLength": 1, "maxLength": 40},
                    "additionalProperties": {"type": ["string", "number", "boolean"]}
                });
            }
            "questions" => {
                // Seed 001: at most 5 questions and 512 bytes in all, with no limit of its own on
                // one question; a schema cannot sum the items, so one item is bounded by the total.
                property["maxItems"] = 5.into();
                property["description"] =
                    "Questions to ask the payer at checkout: at most 5, at most 512 bytes (UTF-8) in all".into();
                if let Some(items) = property.get_mut("items") {
                    items["minLength"] = 1.into();
                    items["maxLength"] = 512.into();
                    items["pattern"] = "[^\\s]".into();
                }
            }
            "answers" => {
                if let Some(items) = property.get_mut("items") {
                    items["minLength"] = 1.into();
                    items["maxLength"] = 500.into();
                    items["pattern"] = "^[^\\u0000-\\u001F\\u007F-\\u009F]*[^\\s\\u0000-\\u001F\\u007F-\\u009F][^\\u0000-\\u001F\\u007F-\\u009F]*$".into();
                }
            }
            "amount" if name == "CreateInvoice" => {
                *property = serde_json::json!({
                    "description": "A decimal string or JSON number in `currency`, 0.01 to 100000099.99 by default (a merchant may have its own bounds)",
                    "oneOf": [
                        {"type": "string", "pattern": INVOICE_AMOUNT_PATTERN},
                        {"type": "number", "minimum": 0.01, "maximum": 99999999}
                    ]
                });
            }
            "amount" if name == "CreateInvoiceRequest" => {
                *property = serde_json::json!({
                    "type": "string",
                    "description": "Payment amount in fiat currency, a decimal string, 0.01 to 100000099.99 by default",
                    "pattern": INVOICE_AMOUNT_PATTERN,
                    "example": "1500.00"
                });
            }
            "amount" if name == "HostedPaymentRequest" => {
                *property = serde_json::json!({
                    "type": "integer",
                    "description": "In cents: 5000 is 50.00 USD; at least 50",
                    "minimum": 50,
                    "maximum": 10_000_009_999_u64,
                    "example": 5000
                });
            }
            "amount" => {
                property["pattern"] = TOKEN_AMOUNT_PATTERN.into();
            }
            _ => {}
        }
    }
    if name == "CreateInvoice" {
        // receiver_override and receiver_override_address come together or not at all.
        schema["if"] = serde_json::json!({"properties": {"receiver_override": {"const": true}}, "required": ["receiver_override"]});
        schema["then"] = serde_json::json!({"required": ["receiver_override_address"], "properties": {"receiver_override_address": {"type": "string"}}});
        schema["else"] = serde_json::json!({"properties": {"receiver_override_address": {"type": "null"}}});
    }
}

/// Every parameter of every operation, with its path and method.
fn for_each_parameter(document: &mut serde_json::Value, f: &mut dyn FnMut(&str, &str, &mut serde_json::Value)) {
    let Some(paths) = document.get_mut("paths").and_then(|p| p.as_object_mut()) else { return };
    for (path, item) in paths.iter_mut() {
        let Some(operations) = item.as_object_mut() else { continue };
        for (method, operation) in operations.iter_mut() {
            if let Some(parameters) = operation.get_mut("parameters").and_then(|p| p.as_array_mut()) {
                for parameter in parameters {
                    f(path, method, parameter);
                }
            }
        }
    }
}

/// Every property of every component schema (request and response bodies), by name.
fn for_each_schema_property(document: &mut serde_json::Value, f: &mut dyn FnMut(&str, &mut serde_json::Value)) {
    fn walk(schema: &mut serde_json::Value, f: &mut dyn FnMut(&str, &mut serde_json::Value)) {
        if let Some(properties) = schema.get_mut("properties").and_then(|p| p.as_object_mut()) {
            for (name, property) in properties.iter_mut() {
                f(name, property);
                walk(property, f);
            }
        }
        for key in ["allOf", "oneOf", "anyOf"] {
            if let Some(items) = schema.get_mut(key).and_then(|i| i.as_array_mut()) {
                items.iter_mut().for_each(|item| walk(item, f));
            }
        }
    }
    if let Some(schemas) =
        document.get_mut("components").and_then(|c| c.get_mut("schemas")).and_then(|s| s.as_object_mut())
    {
        for schema in schemas.values_mut() {
            walk(schema, f);
        }
    }
}

/// `schema` (a string, possibly nullable) may only be one of `values` (or null where it was).
fn set_enum<S: AsRef<str>>(schema: &mut serde_json::Value, values: &[S]) {
    let mut values: Vec<serde_json::Value> = values.iter().map(|v| v.as_ref().into()).collect();
    let nullable = schema["type"].as_array().is_some_and(|t| t.iter().any(|t| t == "null"));
    if nullable {
        values.push(serde_json::Value::Null);
    }
    if let Some(object) = schema.as_object_mut() {
        object.insert("enum".into(), values.into());
    }
}

/// [`set_enum`] on a parameter's schema.
fn set_enum_at<S: AsRef<str>>(parameter: &mut serde_json::Value, values: &[S]) {
    if let Some(schema) = parameter.get_mut("schema") {
        set_enum(schema, values);
    }
}

/// `["string", "null"]` -> `"string"`.
fn drop_null(schema: &mut serde_json::Value) {
    if let Some(types) = schema["type"].as_array() {
        let kept: Vec<serde_json::Value> = types.iter().filter(|t| *t != "null").cloned().collect();
        if kept.len() == 1 {
            schema["type"] = kept[0].clone();
        }
    }
}
