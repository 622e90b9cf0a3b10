//! OpenAPI schemas the derives cannot write, for request and response types to name with
//! `#[schema(schema_with = ...)]`. Kept apart from [`crate::openapi`], which imports the routes,
//! so that the routes' types can use them without an import cycle.

use utoipa::openapi::{ObjectBuilder, OneOfBuilder, RefOr, Schema, schema::Type};

/// `amount`: a decimal string or a JSON number.
pub fn amount_schema() -> impl Into<RefOr<Schema>> {
    OneOfBuilder::new()
        .item(ObjectBuilder::new().schema_type(Type::String).pattern(Some(r"^[0-9]+(\.[0-9]+)?$")))
        .item(ObjectBuilder::new().schema_type(Type::Number).minimum(Some(0.01)))
}
