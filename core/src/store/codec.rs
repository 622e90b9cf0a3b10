//! Column codecs for values stored as TEXT: ids (UUIDv7), U256 amounts and the other numbers too
//! wide for BIGINT, decoded where the row is read instead of by hand afterwards.
//!
//! sqlx's `Any` driver only knows its own primitive types, and a foreign type (`Uuid`) cannot be
//! given a foreign trait (`Decode<Any>`) here, so [`Text`] wraps any `Display + FromStr` value and
//! forwards to `str`'s codec. Enums stored as TEXT have their own codec (see
//! [`text_enum!`](crate::text_enum)). Timestamps are BIGINT epoch milliseconds and need none.

use std::fmt::Display;
use std::str::FromStr;

use sqlx::any::AnyTypeInfo;
use sqlx::encode::IsNull;
use sqlx::error::BoxDynError;
use sqlx::{Any, Database, Decode, Encode, Type};

/// A value stored as its `Display` text and read back with `FromStr` (a row field of type
/// `Text<Uuid>`, a bind of `Text(id)`). A stored text that does not parse fails to decode, which
/// the store reports as [`StoreError::Corrupt`](super::StoreError::Corrupt).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Text<T>(pub T);

impl<T> Text<T> {
    pub fn into_inner(self) -> T {
        self.0
    }
}

impl<T> Type<Any> for Text<T> {
    fn type_info() -> AnyTypeInfo {
        <str as Type<Any>>::type_info()
    }
    fn compatible(ty: &AnyTypeInfo) -> bool {
        <str as Type<Any>>::compatible(ty)
    }
}

impl<'q, T: Display> Encode<'q, Any> for Text<T> {
    fn encode_by_ref(&self, buf: &mut <Any as Database>::ArgumentBuffer) -> Result<IsNull, BoxDynError> {
        <String as Encode<'q, Any>>::encode(self.0.to_string(), buf)
    }
}

impl<'r, T: FromStr> Decode<'r, Any> for Text<T>
where
    T::Err: Display,
{
    fn decode(value: <Any as Database>::ValueRef<'r>) -> Result<Self, BoxDynError> {
        let text = <&str as Decode<'r, Any>>::decode(value)?;
        text.parse().map(Text).map_err(|e: T::Err| format!("{text:?}: {e}").into())
    }
}

/// `Option<Text<T>>` to `Option<T>`, for nullable columns.
pub(crate) fn opt<T>(value: Option<Text<T>>) -> Option<T> {
    value.map(Text::into_inner)
}
