//! Closed sets of wire names (`snake_case`) with parsing at the boundary.

/// A stored or sent name outside a closed set.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown name {0:?}")]
pub struct UnknownChoice(pub String);

/// Declares a `Copy` enum with `as_str`, `parse` and `ALL`, serialized by its wire name and read
/// from it (`TryFrom<String>`, as read-model rows hold it).
#[macro_export]
macro_rules! choice {
    (@join $first:literal $(, $rest:literal)*) => { concat!($first $(, "|", $rest)*) };
    ($(#[$doc:meta])* $name:ident { $($variant:ident => $wire:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
        pub enum $name {
            $(#[serde(rename = $wire)] $variant,)+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The wire name.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $wire,)+ }
            }

            /// Parses a wire name.
            pub fn parse(raw: &str) -> Option<Self> {
                match raw { $($wire => Some($name::$variant),)+ _ => None }
            }

            /// `a|b|c`: every wire name, for error messages and schemas.
            pub const EXPECTED: &'static str = $crate::choice!(@join $($wire),+);

            /// [`Self::EXPECTED`], owned.
            pub fn expected() -> String {
                Self::EXPECTED.to_owned()
            }
        }

        /// Its wire names, as a string schema (written here: the derive would not see the
        /// `rename`s this macro passes on).
        #[cfg(feature = "openapi")]
        impl utoipa::PartialSchema for $name {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                utoipa::openapi::ObjectBuilder::new()
                    .schema_type(utoipa::openapi::schema::Type::String)
                    .enum_values(Some([$($wire),+]))
                    .into()
            }
        }

        #[cfg(feature = "openapi")]
        impl utoipa::ToSchema for $name {}

        impl TryFrom<String> for $name {
            type Error = $crate::choice::UnknownChoice;
            fn try_from(raw: String) -> Result<Self, Self::Error> {
                Self::parse(&raw).ok_or($crate::choice::UnknownChoice(raw))
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}
