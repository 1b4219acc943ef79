//! Function types written out in WIT notation with every type's structure
//! spelled out, so that two signatures compare equal exactly when the
//! component model would match them.

use std::fmt::Write as _;

use wit_parser::{Function, Resolve, Type, TypeDefKind};

/// Compares a function's type with berth's; says how they differ, if they do.
pub(super) fn compare(
    what: &str,
    function: &Function,
    resolve: &Resolve,
    expected: &Function,
    expected_resolve: &Resolve,
) -> Option<String> {
    let ours = signature(expected, expected_resolve, false);
    let theirs = signature(function, resolve, false);
    (ours != theirs).then(|| {
        format!(
            "the {what} `{}` has the wrong type: berth expects {}, the plugin has {}",
            function.name,
            signature(expected, expected_resolve, true),
            signature(function, resolve, true)
        )
    })
}

/// A function's type in WIT notation, with the structure of every type spelled
/// out (so two signatures compare equal exactly when the types match).
/// `names` adds the parameter names, which the component model does not match on.
pub(super) fn signature(function: &Function, resolve: &Resolve, names: bool) -> String {
    let mut out = String::from("func(");
    for (i, param) in function.params.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        if names {
            let _ = write!(out, "{}: ", param.name);
        }
        render(&param.ty, resolve, &mut out);
    }
    out.push(')');
    if let Some(result) = &function.result {
        out.push_str(" -> ");
        render(result, resolve, &mut out);
    }
    out
}

/// Writes `ty` in WIT notation, a named type as its structure.
fn render(ty: &Type, resolve: &Resolve, out: &mut String) {
    let name = match ty {
        Type::Bool => "bool",
        Type::U8 => "u8",
        Type::U16 => "u16",
        Type::U32 => "u32",
        Type::U64 => "u64",
        Type::S8 => "s8",
        Type::S16 => "s16",
        Type::S32 => "s32",
        Type::S64 => "s64",
        Type::F32 => "f32",
        Type::F64 => "f64",
        Type::Char => "char",
        Type::String => "string",
        Type::ErrorContext => "error-context",
        Type::Id(id) => return render_def(&resolve.types[*id].kind, resolve, out),
    };
    out.push_str(name);
}

/// Writes a defined type's structure in WIT notation.
fn render_def(kind: &TypeDefKind, resolve: &Resolve, out: &mut String) {
    let list = |out: &mut String, open: &str, items: Vec<String>, close: &str| {
        out.push_str(open);
        out.push_str(&items.join(", "));
        out.push_str(close);
    };
    let one = |ty: &Type| {
        let mut s = String::new();
        render(ty, resolve, &mut s);
        s
    };
    let maybe = |ty: &Option<Type>| ty.as_ref().map_or("_".to_string(), one);
    match kind {
        TypeDefKind::Type(ty) => render(ty, resolve, out),
        TypeDefKind::Record(record) => list(
            out,
            "record { ",
            record
                .fields
                .iter()
                .map(|f| format!("{}: {}", f.name, one(&f.ty)))
                .collect(),
            " }",
        ),
        TypeDefKind::Variant(variant) => list(
            out,
            "variant { ",
            variant
                .cases
                .iter()
                .map(|c| match &c.ty {
                    Some(ty) => format!("{}({})", c.name, one(ty)),
                    None => c.name.clone(),
                })
                .collect(),
            " }",
        ),
        TypeDefKind::Enum(e) => list(
            out,
            "enum { ",
            e.cases.iter().map(|c| c.name.clone()).collect(),
            " }",
        ),
        TypeDefKind::Flags(flags) => list(
            out,
            "flags { ",
            flags.flags.iter().map(|f| f.name.clone()).collect(),
            " }",
        ),
        TypeDefKind::Tuple(tuple) => {
            list(out, "tuple<", tuple.types.iter().map(one).collect(), ">")
        }
        TypeDefKind::Option(ty) => {
            let _ = write!(out, "option<{}>", one(ty));
        }
        TypeDefKind::Result(result) => {
            let _ = write!(out, "result<{}, {}>", maybe(&result.ok), maybe(&result.err));
        }
        TypeDefKind::List(ty) => {
            let _ = write!(out, "list<{}>", one(ty));
        }
        TypeDefKind::FixedLengthList(ty, n) => {
            let _ = write!(out, "list<{}, {n}>", one(ty));
        }
        TypeDefKind::Map(k, v) => {
            let _ = write!(out, "map<{}, {}>", one(k), one(v));
        }
        TypeDefKind::Future(ty) => {
            let _ = write!(out, "future<{}>", maybe(ty));
        }
        TypeDefKind::Stream(ty) => {
            let _ = write!(out, "stream<{}>", maybe(ty));
        }
        TypeDefKind::Resource | TypeDefKind::Handle(_) | TypeDefKind::Unknown => {
            out.push_str("resource")
        }
    }
}
