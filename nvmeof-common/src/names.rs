//! The names the agent finds an object's maps, globals and programs by.

/// Declares one `&str` constant per map, global or program of an eBPF object (or kernel function
/// a program attaches to), each written as the identifier it has where it is declared: aya names
/// a map or global after its `static` and a program after its function. `MAP` is the constant
/// `MAP` naming `"MAP"`; `CONST: function` names `"function"`. Each name is written once, as that
/// identifier, instead of a constant and a string literal that say it twice.
macro_rules! object_names {
    (@name $name:ident) => {
        stringify!($name)
    };
    (@name $name:ident $item:ident) => {
        stringify!($item)
    };
    ($( $(#[$doc:meta])* $name:ident $(: $item:ident)? ),* $(,)?) => {
        $( $(#[$doc])* pub const $name: &str = object_names!(@name $name $($item)?); )*
    };
}
