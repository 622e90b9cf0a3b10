//! Enums stored as TEXT: one word table per enum gives the stored word of each variant, and from it
//! `ALL`, `as_str`, `Display`, `FromStr` and the sqlx codec for the `Any` driver.
//!
//! The stored words are the database's contract: existing rows must read back, so a word is
//! never changed once released (add a variant instead).
//!
//! sqlx's `Any` driver has no public type-info constructor; custom types forward to the impls of
//! `str` (what sqlx's own derives do, and what its maintainers advise in sqlx issue #3599).
//! A value that is not one of the words fails to decode; the store reports that as
//! [`StoreError::Corrupt`](crate::store::StoreError::Corrupt).

/// An enum with one stored word per variant (implemented by [`text_enum!`]).
pub trait TextEnum: Copy + Sized + 'static {
    /// What a value names, for error messages ("payout status").
    const WHAT: &'static str;
    /// Every variant, in declaration order.
    const VARIANTS: &'static [Self];

    /// The stored word.
    fn as_str(self) -> &'static str;

    /// The variant whose stored word is `s`; the error names the words there are.
    fn parse_word(s: &str) -> Result<Self, String> {
        Self::VARIANTS.iter().copied().find(|v| v.as_str() == s).ok_or_else(|| {
            let known: Vec<_> = Self::VARIANTS.iter().map(|v| v.as_str()).collect();
            format!("unknown {} {s:?} (one of {})", Self::WHAT, known.join(", "))
        })
    }
}

/// Gives an enum the stored word of each variant, and from that table `ALL`, `as_str`,
/// [`TextEnum`], `Display` (the word), `FromStr` (`Err = String`) and sqlx `Type`/`Encode`/`Decode`
/// for `Any` as TEXT:
///
/// ```text
/// /// Where a deposit is in its life.
/// #[derive(Debug, Clone, Copy, PartialEq, Eq)]
/// pub enum DepositState {
///     /// Seen in a block, not yet confirmed.
///     Detected,
///     Confirmed,
/// }
///
/// text_enum! { DepositState as "deposit state" { Detected = "detected", Confirmed = "confirmed" } }
/// ```
///
/// The name after `as` is what parse errors call a value. The compiler holds the table to the
/// enum: a variant left out is a non-exhaustive `as_str`, one named twice an unreachable pattern.
macro_rules! text_enum {
    (
        $name:ident as $what:literal {
            $( $variant:ident = $word:literal ),+ $(,)?
        }
    ) => {
        impl $name {
            /// Every variant, in the order of the word table.
            pub const ALL: [$name; [$($word),+].len()] = [$($name::$variant),+];

            /// The word stored for this value (`const`, so tables of words can be built at compile time).
            pub const fn as_str(self) -> &'static str {
                match self {
                    $( $name::$variant => $word, )+
                }
            }
        }

        impl $crate::text_enum::TextEnum for $name {
            const WHAT: &'static str = $what;
            const VARIANTS: &'static [Self] = &$name::ALL;
            fn as_str(self) -> &'static str {
                $name::as_str(self)
            }
        }

        impl ::std::fmt::Display for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl ::std::str::FromStr for $name {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                <$name as $crate::text_enum::TextEnum>::parse_word(s)
            }
        }

        impl ::sqlx::Type<::sqlx::Any> for $name {
            fn type_info() -> ::sqlx::any::AnyTypeInfo {
                <str as ::sqlx::Type<::sqlx::Any>>::type_info()
            }
            fn compatible(ty: &::sqlx::any::AnyTypeInfo) -> bool {
                <str as ::sqlx::Type<::sqlx::Any>>::compatible(ty)
            }
        }

        impl<'q> ::sqlx::Encode<'q, ::sqlx::Any> for $name {
            fn encode_by_ref(
                &self,
                buf: &mut <::sqlx::Any as ::sqlx::Database>::ArgumentBuffer,
            ) -> Result<::sqlx::encode::IsNull, ::sqlx::error::BoxDynError> {
                <&str as ::sqlx::Encode<'q, ::sqlx::Any>>::encode(self.as_str(), buf)
            }
        }

        impl<'r> ::sqlx::Decode<'r, ::sqlx::Any> for $name {
            fn decode(
                value: <::sqlx::Any as ::sqlx::Database>::ValueRef<'r>,
            ) -> Result<Self, ::sqlx::error::BoxDynError> {
                let word = <&str as ::sqlx::Decode<'r, ::sqlx::Any>>::decode(value)?;
                Ok(<$name as $crate::text_enum::TextEnum>::parse_word(word)?)
            }
        }
    };
}

pub(crate) use text_enum;

#[cfg(test)]
mod tests {
    use super::TextEnum;

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Colour {
        Red,
        DarkBlue,
    }

    text_enum! { Colour as "colour" { Red = "red", DarkBlue = "dark_blue" } }

    #[test]
    fn words_round_trip_and_unknown_words_name_the_known_ones() {
        assert_eq!(Colour::ALL, [Colour::Red, Colour::DarkBlue]);
        for c in Colour::ALL {
            assert_eq!(c.as_str().parse::<Colour>(), Ok(c));
            assert_eq!(c.to_string(), c.as_str());
        }
        assert_eq!(Colour::parse_word("green"), Err("unknown colour \"green\" (one of red, dark_blue)".to_owned()));
    }
}
