//! Enums whose variants are indices: a slot of a counter array, a byte of a map key, a label.

/// Declares an enum whose variants are 0, 1, 2… in the order written, with:
/// - `COUNT`, the number of variants (the length of the arrays they index);
/// - `ALL`, every variant in index order, which `from_repr` indexes;
/// - `from_repr`, the variant of a value read back from a map, `None` past the last;
/// - `as_str`, when every variant names its label value (`Variant => "label"`).
///
/// The variants are written once: the enum, its list and its labels cannot fall out of order, as
/// hand-kept copies of the three could (a list out of order would decode every key after the
/// slip to the wrong variant).
#[macro_export]
macro_rules! indexed_enum {
    (
        $(#[$meta:meta])*
        pub enum $name:ident: $repr:ident {
            $( $(#[$vmeta:meta])* $variant:ident => $label:literal ),+ $(,)?
        }
    ) => {
        $crate::indexed_enum! {
            $(#[$meta])*
            pub enum $name: $repr { $( $(#[$vmeta])* $variant ),+ }
        }

        impl $name {
            /// The label value of this variant.
            pub fn as_str(self) -> &'static str {
                match self {
                    $( $name::$variant => $label ),+
                }
            }
        }
    };
    (
        $(#[$meta:meta])*
        pub enum $name:ident: $repr:ident {
            $( $(#[$vmeta:meta])* $variant:ident ),+ $(,)?
        }
    ) => {
        $(#[$meta])*
        #[repr($repr)]
        pub enum $name {
            $( $(#[$vmeta])* $variant ),+
        }

        impl $name {
            /// The number of variants.
            pub const COUNT: usize = [$( $name::$variant ),+].len();
            /// Every variant, in index order.
            pub const ALL: [$name; $name::COUNT] = [$( $name::$variant ),+];

            /// The variant whose index is `v`, `None` past the last.
            pub fn from_repr(v: $repr) -> Option<$name> {
                $name::ALL.get(v as usize).copied()
            }
        }
    };
}

#[cfg(test)]
mod tests {
    crate::indexed_enum! {
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub enum Colour: u8 {
            Red => "red",
            Green => "green",
            Blue => "blue",
        }
    }

    #[test]
    fn variants_are_indices_in_the_order_written() {
        assert_eq!(Colour::COUNT, 3);
        assert_eq!(Colour::ALL, [Colour::Red, Colour::Green, Colour::Blue]);
        for (i, c) in Colour::ALL.into_iter().enumerate() {
            assert_eq!(c as usize, i);
            assert_eq!(Colour::from_repr(i as u8), Some(c));
        }
        assert_eq!(Colour::from_repr(3), None);
        assert_eq!(Colour::from_repr(u8::MAX), None);
        assert_eq!(Colour::Green.as_str(), "green");
    }
}
