//! Label and field selectors, parsed, printed and matched exactly as upstream's
//! `k8s.io/apimachinery/pkg/labels` and `.../fields` do, with the API server's per-kind field
//! support on top.
//!
//! - [`parse_label_selector`] is `labels.Parse`: `=`, `==`, `!=`, `in`, `notin`, `key`, `!key`
//!   (and upstream's `>`/`<`), comma-separated, whitespace tolerant, keys and values validated.
//!   [`LabelSelector::from_k8s`] is `metav1.LabelSelectorAsSelector` (an empty selector matches
//!   everything, a null one — [`LabelSelector::from_k8s_opt`] with `None` — nothing), and the
//!   `Display` impl is `Selector.String` (`app=kubia`), which the ReplicaSet `-o wide` Selector
//!   column and a Scale's `status.selector` use.
//! - [`parse_field_selector`] is `fields.ParseSelector` (`a=b`, `a==b`, `a!=b`, `\` escapes);
//!   [`check_supported`] rejects fields a kind does not support with the server's message and
//!   [`FieldSelector::matches`] evaluates a selector on an object's stored JSON.
//!
//! Every error is a [`SelectorError`] whose `Display` is upstream's message, ready to go into a
//! `400 BadRequest` `Status`.

mod field;
mod label;
mod validation;

#[cfg(test)]
mod tests;

pub use field::{
    FieldOperator, FieldSelector, FieldTerm, check_supported, escape_value, field_value, parse_field_selector,
};
pub use label::{LabelSelector, Operator, Requirement, format_labels, parse_label_selector};

/// Why a selector was rejected. `Display` is the API server's message.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SelectorError {
    /// A `labelSelector` string `labels.Parse` rejects (syntax, key or value validation).
    #[error("{message}")]
    InvalidLabelSelector { selector: String, message: String },
    /// A structured `metav1.LabelSelector` that `LabelSelectorAsSelector` rejects.
    #[error("{message}")]
    InvalidLabelSelectorObject { message: String },
    /// A `fieldSelector` string `fields.ParseSelector` rejects.
    #[error("{message}")]
    InvalidFieldSelector { selector: String, message: String },
    /// A field selector naming a field the kind does not support.
    #[error("{message}")]
    UnsupportedField { kind: String, field: String, message: String },
}
