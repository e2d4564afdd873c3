//! Server-side printing: the `meta.k8s.io/v1` `Table` that `kubectl get` asks for, with
//! upstream's column sets and cell rendering for every kind pier serves.
//!
//! [`column_definitions`] and [`row_cells`] re-express `pkg/printers/internalversion/printers.go`
//! per kind (the API server always prints "wide": every cell is filled and kubectl hides the
//! priority-1 columns unless `-o wide`); kinds without a printer get the default convertor's
//! `Name`, `Created At`. [`build_table`] assembles the whole answer, including the row objects
//! selected by `includeObject` (`PartialObjectMetadata` by default, which kubectl needs for
//! `--show-labels` and `-A`). Ages are [`human_duration`] / [`translate_timestamp_since`] at the
//! `now` the caller passes, so everything here is a pure function.

mod columns;
mod duration;
mod rows;

#[cfg(test)]
mod tests;

use std::str::FromStr;

use jiff::Timestamp;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value, json};

pub use columns::column_definitions;
pub use duration::{human_duration, translate_timestamp_since};

/// `apiVersion` of [`Table`] and of the `PartialObjectMetadata` row objects.
pub const TABLE_API_VERSION: &str = "meta.k8s.io/v1";

/// `metav1.Table`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Table {
    /// Always `Table`.
    pub kind: String,
    /// Always `meta.k8s.io/v1`.
    pub api_version: String,
    #[serde(default)]
    pub metadata: ListMeta,
    /// Empty when headers are omitted (watch events after the first); serialized as `null`
    /// then, as upstream's nil slice is.
    #[serde(serialize_with = "null_if_empty", deserialize_with = "empty_if_null", default)]
    pub column_definitions: Vec<TableColumnDefinition>,
    #[serde(deserialize_with = "empty_if_null", default)]
    pub rows: Vec<TableRow>,
}

/// `metav1.ListMeta`, every field omitted when empty.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListMeta {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub resource_version: String,
    #[serde(rename = "continue", default, skip_serializing_if = "String::is_empty")]
    pub continue_: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remaining_item_count: Option<i64>,
}

/// `metav1.TableColumnDefinition`; every field is always serialized.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableColumnDefinition {
    pub name: String,
    /// An OpenAPI type: `string`, `integer`, `number`, `boolean`, `date`.
    #[serde(rename = "type")]
    pub type_: String,
    /// An OpenAPI format modifier; `name` marks the object's name column.
    pub format: String,
    pub description: String,
    /// 0 is always shown; higher priorities only with `-o wide`.
    pub priority: i32,
}

/// `metav1.TableRow`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TableRow {
    /// One cell per column: strings, numbers, booleans or null.
    pub cells: Vec<Value>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<TableRowCondition>,
    /// The row's object per `includeObject`; absent for `None`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object: Option<Value>,
}

/// `metav1.TableRowCondition` (upstream only uses `Completed`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableRowCondition {
    #[serde(rename = "type")]
    pub type_: String,
    pub status: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
}

impl TableRowCondition {
    fn completed(reason: &str, message: &str) -> Self {
        TableRowCondition {
            type_: "Completed".to_string(),
            status: "True".to_string(),
            reason: reason.to_string(),
            message: message.to_string(),
        }
    }
}

fn null_if_empty<S: Serializer>(v: &[TableColumnDefinition], s: S) -> Result<S::Ok, S::Error> {
    if v.is_empty() { s.serialize_none() } else { v.serialize(s) }
}

fn empty_if_null<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Vec<T>, D::Error> {
    Ok(Option::<Vec<T>>::deserialize(d)?.unwrap_or_default())
}

/// What each row's `object` holds (`includeObject` query parameter).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum IncludeObject {
    /// No object.
    None,
    /// A `PartialObjectMetadata` with the object's full `metadata` (the default).
    #[default]
    Metadata,
    /// The whole object.
    Object,
}

/// An `includeObject` value other than `None`, `Metadata` or `Object`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unrecognized includeObject value: \"{0}\"")]
pub struct UnknownIncludeObject(pub String);

impl FromStr for IncludeObject {
    type Err = UnknownIncludeObject;

    /// Parses the query value; the empty string is the default (`Metadata`).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "None" => Ok(IncludeObject::None),
            "Metadata" | "" => Ok(IncludeObject::Metadata),
            "Object" => Ok(IncludeObject::Object),
            other => Err(UnknownIncludeObject(other.to_string())),
        }
    }
}

impl IncludeObject {
    /// From an optional query parameter; absent means `Metadata`.
    pub fn from_query(value: Option<&str>) -> Result<Self, UnknownIncludeObject> {
        value.map_or(Ok(IncludeObject::default()), str::parse)
    }

    /// The row object for `obj` under this policy.
    pub fn row_object(self, obj: &Value) -> Option<Value> {
        match self {
            IncludeObject::None => None,
            IncludeObject::Object => Some(obj.clone()),
            IncludeObject::Metadata => {
                let metadata = obj.get("metadata").cloned().unwrap_or_else(|| Value::Object(Map::new()));
                Some(json!({
                    "kind": "PartialObjectMetadata",
                    "apiVersion": TABLE_API_VERSION,
                    "metadata": metadata,
                }))
            }
        }
    }
}

/// The cells of one object's row, one per entry of [`column_definitions`] for `kind`.
pub fn row_cells(kind: &str, obj: &Value, now: Timestamp) -> Vec<Value> {
    rows::row(kind, obj, now).0
}

/// One complete row: cells, upstream's row conditions (a `Succeeded`/`Failed` Pod is
/// `Completed`) and the object chosen by `include`.
pub fn build_row(kind: &str, obj: &Value, include: IncludeObject, now: Timestamp) -> TableRow {
    let (cells, conditions) = rows::row(kind, obj, now);
    TableRow { cells, conditions, object: include.row_object(obj) }
}

/// The `Table` for a list (or, with one object, a single GET or a watch event) of `kind`.
/// `resource_version` goes into the list metadata (the list's, or the object's for a single
/// object); `with_headers = false` leaves out the column definitions, as upstream does for
/// every watch event after the first.
pub fn build_table(
    kind: &str,
    objects: &[Value],
    resource_version: &str,
    include: IncludeObject,
    now: Timestamp,
    with_headers: bool,
) -> Table {
    Table {
        kind: "Table".to_string(),
        api_version: TABLE_API_VERSION.to_string(),
        metadata: ListMeta { resource_version: resource_version.to_string(), ..ListMeta::default() },
        column_definitions: if with_headers { column_definitions(kind) } else { Vec::new() },
        rows: objects.iter().map(|obj| build_row(kind, obj, include, now)).collect(),
    }
}
