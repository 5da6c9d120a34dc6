//! The v1 request side, described for the OpenAPI document. The handlers parse bodies and the
//! query by hand from JSON values (to report every invalid field at once), so these types are
//! schema-only, each mirroring what its parser accepts.

use serde::Deserialize;
use utoipa::openapi::schema::{AdditionalProperties, ArrayBuilder, OneOfBuilder, Schema};
use utoipa::openapi::{ObjectBuilder, RefOr, Type};
use utoipa::{IntoParams, PartialSchema, ToSchema};

use crate::api::openapi::{customer_id, order_status, sku};
use crate::orders::{Currency, MAX_ITEMS, MAX_UNIT_PRICE_MINOR, Quantity};

/// The body of `POST /api/v1/orders`. A unit price has exactly the currency's minor-unit
/// digits, so the schema is one object shape per digit count, each naming its currencies.
#[derive(Debug)]
pub struct NewOrderV1;

impl PartialSchema for NewOrderV1 {
    fn schema() -> RefOr<Schema> {
        let mut one_of = OneOfBuilder::new().description(Some(
            "A new order: who, the currency, and 1 to 100 lines. Unknown members are refused.",
        ));
        for exponent in EXPONENTS {
            one_of = one_of.item(new_order(exponent));
        }
        one_of.into()
    }
}

impl ToSchema for NewOrderV1 {}

/// The minor-unit digit counts of the accepted currencies.
const EXPONENTS: [u8; 3] = [0, 2, 3];

fn closed_object() -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::Object)
        .additional_properties(Some(AdditionalProperties::FreeForm(false)))
}

/// The order shape for currencies with `exponent` minor-unit digits.
fn new_order(exponent: u8) -> ObjectBuilder {
    let codes = Currency::codes()
        .filter(|code| Currency::parse(code).is_ok_and(|c| c.exponent() == exponent));
    closed_object()
        .property("customer_id", customer_id())
        .property(
            "currency",
            ObjectBuilder::new()
                .schema_type(Type::String)
                .enum_values(Some(codes)),
        )
        .property(
            "items",
            ArrayBuilder::new()
                .items(new_item(exponent))
                .min_items(Some(1))
                .max_items(Some(MAX_ITEMS)),
        )
        .required("customer_id")
        .required("currency")
        .required("items")
}

fn new_item(exponent: u8) -> ObjectBuilder {
    closed_object()
        .property("sku", sku())
        .property(
            "quantity",
            ObjectBuilder::new()
                .schema_type(Type::Integer)
                .minimum(Some(1))
                .maximum(Some(Quantity::MAX)),
        )
        .property(
            "unit_price",
            ObjectBuilder::new()
                .schema_type(Type::String)
                .pattern(Some(unit_price_pattern(exponent)))
                .description(Some(
                    "Price of one unit with exactly the currency's minor-unit digits, e.g. \
                     \"9.99\" EUR, \"1200\" JPY, \"0.125\" BHD.",
                )),
        )
        .required("sku")
        .required("quantity")
        .required("unit_price")
}

/// Digits only, no sign or leading zero, exactly `exponent` digits after a point, and at most
/// [`MAX_UNIT_PRICE_MINOR`] minor units (all nines, so a digit count bounds it exactly).
fn unit_price_pattern(exponent: u8) -> String {
    let digits = MAX_UNIT_PRICE_MINOR.to_string().len() - usize::from(exponent);
    let fraction = match exponent {
        0 => String::new(),
        n => format!(r"\.[0-9]{{{n}}}"),
    };
    format!("^(0|[1-9][0-9]{{0,{}}}){fraction}$", digits - 1)
}

/// The query of `GET /api/v1/orders`; other parameters are ignored.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQueryV1 {
    /// Only orders in this status.
    #[param(nullable = false, schema_with = order_status)]
    pub status: Option<String>,
    /// Only this customer's orders.
    #[param(nullable = false, schema_with = customer_id)]
    pub customer_id: Option<String>,
    /// Page size.
    #[param(nullable = false, minimum = 1, maximum = 100, default = 20)]
    pub limit: Option<u32>,
    /// Orders to skip.
    #[param(
        nullable = false,
        minimum = 0,
        maximum = 9_223_372_036_854_775_807_u64,
        default = 0
    )]
    pub offset: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unit_price_patterns_bound_digits_by_the_largest_price() {
        assert_eq!(unit_price_pattern(0), "^(0|[1-9][0-9]{0,11})$");
        assert_eq!(unit_price_pattern(2), r"^(0|[1-9][0-9]{0,9})\.[0-9]{2}$");
        assert_eq!(unit_price_pattern(3), r"^(0|[1-9][0-9]{0,8})\.[0-9]{3}$");
    }

    #[test]
    fn every_currency_has_one_body_shape() {
        let shapes: usize = EXPONENTS
            .map(|e| {
                Currency::codes()
                    .filter(|c| Currency::parse(c).is_ok_and(|c| c.exponent() == e))
                    .count()
            })
            .iter()
            .sum();
        assert_eq!(shapes, Currency::codes().count());
    }
}
