//! The order domain: types that parse (never "validate later"), money in integer minor units,
//! and the status state machine. Nothing here knows about HTTP or SQL.

mod money;
mod status;
pub mod timestamp;

use chrono::{DateTime, Utc};
use uuid::Uuid;

pub use money::{Currency, MAX_UNIT_PRICE_MINOR, format_minor, parse_minor};
pub use status::{IllegalTransition, OrderStatus};

/// Most line items one order may carry.
pub const MAX_ITEMS: usize = 100;

/// A customer reference: 1-64 of `[A-Za-z0-9_-]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CustomerId(String);

impl CustomerId {
    /// Parses a customer id, or says what is wrong with it.
    pub fn parse(s: &str) -> Result<Self, &'static str> {
        let ok_char = |b: u8| b.is_ascii_alphanumeric() || b == b'_' || b == b'-';
        match s.len() {
            0 => Err("must not be empty"),
            65.. => Err("must be at most 64 characters"),
            _ if !s.bytes().all(ok_char) => Err("may contain only A-Z, a-z, 0-9, '_' and '-'"),
            _ => Ok(Self(s.to_string())),
        }
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A stock-keeping unit: 1-64 of `[A-Z0-9-]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sku(String);

impl Sku {
    /// Parses a SKU, or says what is wrong with it.
    pub fn parse(s: &str) -> Result<Self, &'static str> {
        let ok_char = |b: u8| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'-';
        match s.len() {
            0 => Err("must not be empty"),
            65.. => Err("must be at most 64 characters"),
            _ if !s.bytes().all(ok_char) => Err("may contain only A-Z, 0-9 and '-'"),
            _ => Ok(Self(s.to_string())),
        }
    }

    /// The SKU as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// How many units of one SKU: 1-1000.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quantity(u32);

impl Quantity {
    /// Largest quantity per line.
    pub const MAX: u32 = 1000;

    /// The quantity as a number.
    pub fn get(self) -> u32 {
        self.0
    }
}

impl TryFrom<i64> for Quantity {
    type Error = &'static str;

    fn try_from(n: i64) -> Result<Self, Self::Error> {
        match u32::try_from(n) {
            Ok(q @ 1..=Self::MAX) => Ok(Self(q)),
            _ => Err("must be an integer from 1 to 1000"),
        }
    }
}

/// One line of an order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineItem {
    /// What is ordered.
    pub sku: Sku,
    /// How many.
    pub quantity: Quantity,
    /// Price of one unit in the order's currency, in minor units.
    pub unit_price_minor: i64,
}

/// A parsed, valid request to create an order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewOrder {
    /// Who ordered.
    pub customer_id: CustomerId,
    /// The currency of every price.
    pub currency: Currency,
    /// 1 to [`MAX_ITEMS`] lines.
    pub items: Vec<LineItem>,
}

impl NewOrder {
    /// The order, if every part of it parsed (parsers collect their problems elsewhere).
    pub fn from_parts(
        customer_id: Option<CustomerId>,
        currency: Option<Currency>,
        items: Option<Vec<LineItem>>,
    ) -> Option<Self> {
        Some(Self {
            customer_id: customer_id?,
            currency: currency?,
            items: items?,
        })
    }

    /// Sum of quantity × unit price, in minor units. Cannot overflow: prices and quantities are
    /// bounded so that the largest possible order stays far below `i64::MAX`.
    pub fn total_minor(&self) -> i64 {
        self.items
            .iter()
            .map(|i| i.unit_price_minor * i64::from(i.quantity.get()))
            .sum()
    }
}

/// A stored order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Order {
    /// UUIDv7: time-ordered.
    pub id: Uuid,
    /// Who ordered.
    pub customer_id: CustomerId,
    /// The currency of every price.
    pub currency: Currency,
    /// The lines, in the order they were given.
    pub items: Vec<LineItem>,
    /// Sum of the lines, in minor units.
    pub total_minor: i64,
    /// Where the order is in its life.
    pub status: OrderStatus,
    /// When it was created (UTC, microsecond precision).
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
    /// Incremented on every change; the basis of optimistic concurrency.
    pub version: i64,
}

impl Order {
    /// A new pending order created now.
    pub fn create(new: NewOrder, now: DateTime<Utc>) -> Self {
        let total_minor = new.total_minor();
        Self {
            id: Uuid::now_v7(),
            customer_id: new.customer_id,
            currency: new.currency,
            items: new.items,
            total_minor,
            status: OrderStatus::Pending,
            created_at: now,
            updated_at: now,
            version: 1,
        }
    }
}

/// Which orders to list, newest first.
#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    /// Only orders in this status.
    pub status: Option<OrderStatus>,
    /// Only this customer's orders.
    pub customer_id: Option<CustomerId>,
    /// Only orders created at or after this instant.
    pub created_from: Option<DateTime<Utc>>,
    /// Only orders created before this instant.
    pub created_to: Option<DateTime<Utc>>,
}

/// A position in the newest-first order of orders: the `(created_at, id)` of the last order
/// seen. The next page starts strictly after it, so concurrent inserts never shift a page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    /// The last order's creation time.
    pub created_at: DateTime<Utc>,
    /// The last order's id (breaks ties in `created_at`).
    pub id: Uuid,
}

/// The current time truncated to microseconds, the precision both databases keep, so that a
/// value read back equals the value written.
pub fn now() -> DateTime<Utc> {
    let now = Utc::now();
    DateTime::from_timestamp_micros(now.timestamp_micros()).unwrap_or(now)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn customer_ids() {
        assert!(CustomerId::parse("cust_42-A").is_ok());
        assert!(CustomerId::parse("").is_err());
        assert!(CustomerId::parse(&"a".repeat(64)).is_ok());
        assert!(CustomerId::parse(&"a".repeat(65)).is_err());
        assert!(CustomerId::parse("a b").is_err());
        assert!(CustomerId::parse("é").is_err());
    }

    #[test]
    fn skus() {
        assert!(Sku::parse("ABC-123").is_ok());
        assert!(Sku::parse("abc").is_err());
        assert!(Sku::parse("A_B").is_err());
        assert!(Sku::parse(&"A".repeat(65)).is_err());
    }

    #[test]
    fn quantities() {
        assert!(Quantity::try_from(0).is_err());
        assert_eq!(Quantity::try_from(1).map(Quantity::get), Ok(1));
        assert_eq!(Quantity::try_from(1000).map(Quantity::get), Ok(1000));
        assert!(Quantity::try_from(1001).is_err());
        assert!(Quantity::try_from(-1).is_err());
    }

    #[test]
    fn largest_order_total_fits() {
        let item = LineItem {
            sku: Sku::parse("X").unwrap(),
            quantity: Quantity::try_from(1000).unwrap(),
            unit_price_minor: MAX_UNIT_PRICE_MINOR,
        };
        let order = NewOrder {
            customer_id: CustomerId::parse("c").unwrap(),
            currency: Currency::parse("EUR").unwrap(),
            items: vec![item; MAX_ITEMS],
        };
        assert_eq!(order.total_minor(), MAX_UNIT_PRICE_MINOR * 1000 * 100);
    }
}
