//! How a loss config is declared: [`loss_config!`](crate::loss_config) and the [`LossConfig`]
//! trait it implements.
//!
//! Every loss config of the workspace (loss-core, loss-bbox, loss-seg) is declared once with
//! [`loss_config!`](crate::loss_config): per field its name, type, default and doc. From that one
//! declaration the macro writes the struct, its `Default`, a `with_<field>` builder per field and
//! `serde::Deserialize`, so a default is written in exactly one place and the docs show it.
//!
//! Deserialization takes a map of PyTorch's / MONAI's / mmdetection's argument names:
//! - a missing key or `null` keeps the default;
//! - a key the loss does not have is an error naming it and the loss's parameters (what
//!   `#[serde(deny_unknown_fields)]` does; written by hand because serde's `deny_unknown_fields`
//!   cannot be combined with `flatten`, and the segmentation configs are built from parts whose
//!   parameters are read from the same flat map, as MONAI's `DiceCELoss(**kwargs)`);
//! - tensor parameters (`weight`, `pos_weight`, ...) are not deserialized: a caller that reads
//!   tensors from its own format sets them with [`LossConfig::set_tensor`].
//!
//! ```
//! use loss_core::{Reduction, SmoothL1Loss};
//! let c: SmoothL1Loss = serde_json::from_str(r#"{"beta": 0.5, "reduction": "sum"}"#).unwrap();
//! assert_eq!(c, SmoothL1Loss::default().with_beta(0.5).with_reduction(Reduction::Sum));
//! let e = serde_json::from_str::<SmoothL1Loss>(r#"{"delta": 1.0}"#).unwrap_err();
//! assert!(e.to_string().contains("unknown parameter `delta`"));
//! ```

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, Visitor};
use std::fmt;
use std::marker::PhantomData;

#[doc(hidden)]
pub use candle_core::{Result as CandleResult, Tensor};
#[doc(hidden)]
pub use pastey as __pastey;
#[doc(hidden)]
pub use serde as __serde;

/// A loss config: its parameters by name. Implemented by [`loss_config!`](crate::loss_config).
pub trait LossConfig: Default {
    /// Appends the name of every parameter (its parts' included) to `out`.
    fn param_names(out: &mut Vec<&'static str>);

    /// Whether `key` is a tensor parameter ([`LossConfig::set_tensor`]).
    fn is_tensor_param(key: &str) -> bool;

    /// Sets the tensor parameter `key` (`weight`, `pos_weight`, ...); `false` when the loss has
    /// no tensor parameter of that name.
    fn set_tensor(&mut self, key: &str, value: Tensor) -> bool;

    /// Sets the parameter `key` from `value` (`null` keeps the default); `Ok(false)` when the
    /// loss has no such (non-tensor) parameter.
    ///
    /// # Errors
    /// A value of the wrong type for that parameter.
    fn set_param<'de, D: Deserializer<'de>>(&mut self, key: &str, value: D) -> Result<bool, D::Error>;

    /// Whether `key` names one of the parameters.
    fn has_param(key: &str) -> bool {
        let mut names = Vec::new();
        Self::param_names(&mut names);
        names.contains(&key)
    }

    /// The parameter names, comma-separated and quoted, for error messages.
    fn param_list() -> String {
        let mut names = Vec::new();
        Self::param_names(&mut names);
        names.iter().map(|k| format!("`{k}`")).collect::<Vec<_>>().join(", ")
    }
}

/// The `Deserialize` body of every config: a map whose keys are parameter names.
#[doc(hidden)]
pub fn deserialize<'de, C: LossConfig, D: Deserializer<'de>>(d: D) -> Result<C, D::Error> {
    d.deserialize_map(ConfigVisitor::<C>(PhantomData))
}

struct ConfigVisitor<C>(PhantomData<C>);

impl<'de, C: LossConfig> Visitor<'de> for ConfigVisitor<C> {
    type Value = C;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a map of loss parameters")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<C, A::Error> {
        let mut config = C::default();
        while let Some(key) = map.next_key::<String>()? {
            if C::is_tensor_param(&key) {
                return Err(de::Error::custom(format!(
                    "parameter `{key}` is a tensor: set it with `with_{key}` (or `LossConfig::set_tensor`)"
                )));
            }
            if !map.next_value_seed(SetParam(&mut config, &key))? {
                return Err(de::Error::custom(format!(
                    "unknown parameter `{key}` (this loss takes {})",
                    C::param_list()
                )));
            }
        }
        Ok(config)
    }
}

/// Sets one parameter of a config from the map's next value.
struct SetParam<'a, C>(&'a mut C, &'a str);

impl<'de, C: LossConfig> DeserializeSeed<'de> for SetParam<'_, C> {
    type Value = bool;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
        if !C::has_param(self.1) {
            // Consume the value so that the map can go on (the caller reports the key).
            de::IgnoredAny::deserialize(d)?;
            return Ok(false);
        }
        self.0.set_param(self.1, d)
    }
}

use serde::Deserialize as _;

/// Deserializes a value from its string with `parse` (the enums' PyTorch spellings: `"mean"`,
/// `"xyxy"`, `"ciou"`, ...), so that the spelling is written once, in `parse`.
#[doc(hidden)]
pub fn deserialize_parsed<'de, D, T, E>(d: D, parse: impl FnOnce(&str) -> Result<T, E>) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    E: fmt::Display,
{
    let s = String::deserialize(d)?;
    parse(&s).map_err(de::Error::custom)
}

/// Declares a loss config: the struct, `Default`, the `with_*` builders, `serde::Deserialize`
/// and [`LossConfig`](crate::config::LossConfig), from one line per field.
///
/// ```
/// use loss_core::{loss_config, Reduction};
/// loss_config! {
///     /// My loss's options.
///     #[derive(Debug, Clone)]
///     pub struct MyLoss {
///         /// Width of the quadratic zone.
///         beta: f64 = 1.0,
///         /// Reduction.
///         reduction: Reduction = Reduction::Mean,
///     }
///     optional {
///         /// Target value left out of the loss.
///         ignore_index: i64,
///     }
///     tensors {
///         /// Per-class weights `[C]`.
///         weight,
///     }
/// }
/// let c = MyLoss::default().with_beta(0.5).with_ignore_index(3);
/// assert_eq!((c.beta, c.ignore_index, c.reduction), (0.5, Some(3), Reduction::Mean));
/// let d: MyLoss = serde_json::from_str(r#"{"beta": 0.5, "ignore_index": 3}"#).unwrap();
/// assert_eq!((d.beta, d.ignore_index, d.reduction), (0.5, Some(3), Reduction::Mean));
/// // A tensor parameter is set, not deserialized.
/// assert!(serde_json::from_str::<MyLoss>(r#"{"weight": [1.0]}"#).is_err());
/// ```
///
/// Sections, each optional, in this order after the struct:
/// - the struct's fields `name: Type = default`: a `pub` field, its default, `with_name(Type)`;
/// - `optional { name: Type }`: an `Option<Type>` field, `None` by default, `with_name(Type)`;
/// - `tensors { name }`: an `Option<Tensor>` field, `None` by default, `with_name(Tensor)`, set
///   by [`LossConfig::set_tensor`](crate::config::LossConfig::set_tensor), not deserialized;
/// - `parts { name: Type }`: a nested config (`Type: LossConfig`), its default, `with_name(Type)`;
///   its parameters are read from the same flat map (the config's own fields come first);
///   `parts { name: Type => TypeBuilders }` also gives this config the part's builders;
/// - `builders TypeBuilders;`: declares the trait `TypeBuilders` of this config's `with_*`
///   builders, which a config that holds this one as a part implements (`=> TypeBuilders`);
/// - `loss my_loss(beta, reduction);`: implements [`Loss`](crate::Loss) as the function
///   `my_loss(input, target, self.beta, self.reduction)`, named `"my_loss"` (a tensor field is
///   passed as `weight.as_ref()`: `self.weight.as_ref()`); or `loss_of_config my_loss;`: as
///   `my_loss(input, target, self)`, for functions that take the config;
/// - `forward3 my_loss(input1, input2, target; margin, reduction);`: for a loss of three tensors,
///   the method `forward3(&self, input1, input2, target)` that calls
///   `my_loss(input1, input2, target, self.margin, self.reduction)`.
#[macro_export]
macro_rules! loss_config {
    (@builders [] $name:ident { $($field:ident : $ty:ty = $default:expr),* }) => {};
    (@builders [$trait:ident] $name:ident { $($field:ident : $ty:ty = $default:expr),* }) => {
            $crate::config::__pastey::paste! {
                #[doc = concat!("The `with_*` builders of [`", stringify!($name), "`]'s fields, on every config that holds a [`",
                    stringify!($name), "`] as a part (`parts { name: ", stringify!($name), " => ", stringify!($trait), " }`).")]
                pub trait $trait: Sized {
                    #[doc = concat!("The [`", stringify!($name), "`] this config holds.")]
                    fn options_mut(&mut self) -> &mut $name;
                    $(
                        #[doc = concat!("Sets [`", stringify!($field), "`](", stringify!($name), "::", stringify!($field),
                            ") (default `", stringify!($default), "`).")]
                        #[must_use]
                        fn [<with_ $field>](mut self, $field: $ty) -> Self {
                            <Self as $trait>::options_mut(&mut self).$field = $field;
                            self
                        }
                    )*
                }

                impl $trait for $name {
                    fn options_mut(&mut self) -> &mut $name {
                        self
                    }
                }
            }
    };
    (
        $(#[$meta:meta])*
        $vis:vis struct $name:ident {
            $( $(#[$fmeta:meta])* $field:ident : $ty:ty = $default:expr ),* $(,)?
        }
        $( optional { $( $(#[$ometa:meta])* $ofield:ident : $oty:ty ),* $(,)? } )?
        $( tensors { $( $(#[$tmeta:meta])* $tfield:ident ),* $(,)? } )?
        $( parts { $( $(#[$pmeta:meta])* $pfield:ident : $pty:ty $(=> $ptrait:path)? ),* $(,)? } )?
        $( builders $trait:ident; )?
        $( loss $fname:ident ( $($arg:ident $(. $argm:ident ())?),* ); )?
        $( loss_of_config $cfname:ident; )?
        $( forward3 $f3name:ident ( $in1:ident, $in2:ident, $in3:ident; $($arg3:ident),* ); )?
    ) => {
        $(#[$meta])*
        $vis struct $name {
            $(
                $(#[$fmeta])*
                #[doc = ""]
                #[doc = concat!("Default: `", stringify!($default), "`.")]
                pub $field: $ty,
            )*
            $($(
                $(#[$ometa])*
                #[doc = ""]
                #[doc = "Default: `None`."]
                pub $ofield: ::core::option::Option<$oty>,
            )*)?
            $($(
                $(#[$tmeta])*
                #[doc = ""]
                #[doc = "Default: `None`. A tensor: not deserialized."]
                pub $tfield: ::core::option::Option<$crate::config::Tensor>,
            )*)?
            $($(
                $(#[$pmeta])*
                pub $pfield: $pty,
            )*)?
        }

        impl ::core::default::Default for $name {
            fn default() -> Self {
                Self {
                    $( $field: $default, )*
                    $($( $ofield: ::core::option::Option::None, )*)?
                    $($( $tfield: ::core::option::Option::None, )*)?
                    $($( $pfield: ::core::default::Default::default(), )*)?
                }
            }
        }

        $crate::config::__pastey::paste! {
            impl $name {
                $(
                    #[doc = concat!("Sets [`", stringify!($field), "`](Self::", stringify!($field),
                        ") (default `", stringify!($default), "`).")]
                    #[must_use]
                    pub fn [<with_ $field>](mut self, $field: $ty) -> Self {
                        self.$field = $field;
                        self
                    }
                )*
                $($(
                    #[doc = concat!("Sets [`", stringify!($ofield), "`](Self::", stringify!($ofield),
                        ") (default `None`).")]
                    #[must_use]
                    pub fn [<with_ $ofield>](mut self, $ofield: $oty) -> Self {
                        self.$ofield = ::core::option::Option::Some($ofield);
                        self
                    }
                )*)?
                $($(
                    #[doc = concat!("Sets [`", stringify!($tfield), "`](Self::", stringify!($tfield),
                        ") (default `None`).")]
                    #[must_use]
                    pub fn [<with_ $tfield>](mut self, $tfield: $crate::config::Tensor) -> Self {
                        self.$tfield = ::core::option::Option::Some($tfield);
                        self
                    }
                )*)?
                $($(
                    #[doc = concat!("Sets the part [`", stringify!($pfield), "`](Self::",
                        stringify!($pfield), ").")]
                    #[must_use]
                    pub fn [<with_ $pfield>](mut self, $pfield: $pty) -> Self {
                        self.$pfield = $pfield;
                        self
                    }
                )*)?
            }
        }

        $($(
            $(
                impl $ptrait for $name {
                    fn options_mut(&mut self) -> &mut $pty {
                        &mut self.$pfield
                    }
                }
            )?
        )*)?

        $crate::loss_config!(@builders [$($trait)?] $name { $($field: $ty = $default),* });

        $(
            impl $crate::Loss for $name {
                fn name(&self) -> &'static str {
                    stringify!($fname)
                }
                fn forward(
                    &self,
                    input: &$crate::config::Tensor,
                    target: &$crate::config::Tensor,
                ) -> $crate::config::CandleResult<$crate::config::Tensor> {
                    $fname(input, target, $(self.$arg $(.$argm())?),*)
                }
            }
        )?

        $(
            impl $name {
                #[doc = concat!("The loss of `(", stringify!($in1), ", ", stringify!($in2), ", ",
                    stringify!($in3), ")` ([`", stringify!($f3name), "`]).")]
                #[doc = ""]
                #[doc = "# Errors"]
                #[doc = concat!("As [`", stringify!($f3name), "`].")]
                pub fn forward3(
                    &self,
                    $in1: &$crate::config::Tensor,
                    $in2: &$crate::config::Tensor,
                    $in3: &$crate::config::Tensor,
                ) -> $crate::config::CandleResult<$crate::config::Tensor> {
                    $f3name($in1, $in2, $in3, $(self.$arg3),*)
                }
            }
        )?

        $(
            impl $crate::Loss for $name {
                fn name(&self) -> &'static str {
                    stringify!($cfname)
                }
                fn forward(
                    &self,
                    input: &$crate::config::Tensor,
                    target: &$crate::config::Tensor,
                ) -> $crate::config::CandleResult<$crate::config::Tensor> {
                    $cfname(input, target, self)
                }
            }
        )?

        impl $crate::config::LossConfig for $name {
            fn param_names(out: &mut ::std::vec::Vec<&'static str>) {
                $( out.push(stringify!($field)); )*
                $($( out.push(stringify!($ofield)); )*)?
                $($( out.push(stringify!($tfield)); )*)?
                $($( <$pty as $crate::config::LossConfig>::param_names(out); )*)?
            }

            #[allow(unused_variables)]
            fn is_tensor_param(key: &str) -> bool {
                $($( if key == stringify!($tfield) { return true; } )*)?
                $($(
                    if <$pty as $crate::config::LossConfig>::is_tensor_param(key) {
                        return true;
                    }
                )*)?
                false
            }

            #[allow(unused_variables)]
            fn set_tensor(&mut self, key: &str, value: $crate::config::Tensor) -> bool {
                $($(
                    if key == stringify!($tfield) {
                        self.$tfield = ::core::option::Option::Some(value);
                        return true;
                    }
                )*)?
                $($(
                    if <$pty as $crate::config::LossConfig>::is_tensor_param(key) {
                        return self.$pfield.set_tensor(key, value);
                    }
                )*)?
                false
            }

            #[allow(unused_variables)]
            fn set_param<'de, D: $crate::config::__serde::Deserializer<'de>>(
                &mut self,
                key: &str,
                value: D,
            ) -> ::core::result::Result<bool, D::Error> {
                $(
                    if key == stringify!($field) {
                        let v: ::core::option::Option<$ty> =
                            $crate::config::__serde::Deserialize::deserialize(value)?;
                        if let ::core::option::Option::Some(v) = v {
                            self.$field = v;
                        }
                        return ::core::result::Result::Ok(true);
                    }
                )*
                $($(
                    if key == stringify!($ofield) {
                        self.$ofield = $crate::config::__serde::Deserialize::deserialize(value)?;
                        return ::core::result::Result::Ok(true);
                    }
                )*)?
                $($(
                    if <$pty as $crate::config::LossConfig>::has_param(key)
                        && !<$pty as $crate::config::LossConfig>::is_tensor_param(key)
                    {
                        return self.$pfield.set_param(key, value);
                    }
                )*)?
                ::core::result::Result::Ok(false)
            }
        }

        impl<'de> $crate::config::__serde::Deserialize<'de> for $name {
            fn deserialize<D: $crate::config::__serde::Deserializer<'de>>(
                d: D,
            ) -> ::core::result::Result<Self, D::Error> {
                $crate::config::deserialize(d)
            }
        }
    };
}
