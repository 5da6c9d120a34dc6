//! The order status state machine.

/// Where an order is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OrderStatus {
    /// Created, not paid.
    Pending,
    /// Paid, not shipped.
    Paid,
    /// Handed to the carrier.
    Shipped,
    /// Received by the customer (final).
    Delivered,
    /// Called off before shipping (final).
    Cancelled,
}

/// A status change the state machine does not allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IllegalTransition {
    /// The order's current status.
    pub from: OrderStatus,
    /// The status asked for.
    pub to: OrderStatus,
}

impl std::fmt::Display for IllegalTransition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the order is {}; it cannot become {}",
            self.from.as_str(),
            self.to.as_str()
        )
    }
}

impl OrderStatus {
    /// Every status, in lifecycle order.
    pub const ALL: [OrderStatus; 5] = [
        Self::Pending,
        Self::Paid,
        Self::Shipped,
        Self::Delivered,
        Self::Cancelled,
    ];

    /// The wire and storage name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Paid => "paid",
            Self::Shipped => "shipped",
            Self::Delivered => "delivered",
            Self::Cancelled => "cancelled",
        }
    }

    /// Parses a wire or storage name.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|st| st.as_str() == s)
    }

    /// pending→paid→shipped→delivered; pending|paid→cancelled; nothing else.
    pub fn transition(self, to: Self) -> Result<Self, IllegalTransition> {
        use OrderStatus::*;
        match (self, to) {
            (Pending, Paid) | (Paid, Shipped) | (Shipped, Delivered) => Ok(to),
            (Pending | Paid, Cancelled) => Ok(to),
            _ => Err(IllegalTransition { from: self, to }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::OrderStatus::{self, *};

    #[test]
    fn exactly_five_transitions_are_legal() {
        let legal = [
            (Pending, Paid),
            (Paid, Shipped),
            (Shipped, Delivered),
            (Pending, Cancelled),
            (Paid, Cancelled),
        ];
        for from in OrderStatus::ALL {
            for to in OrderStatus::ALL {
                let ok = from.transition(to).is_ok();
                assert_eq!(ok, legal.contains(&(from, to)), "{from:?} -> {to:?}");
            }
        }
    }

    #[test]
    fn names_round_trip() {
        for s in OrderStatus::ALL {
            assert_eq!(OrderStatus::parse(s.as_str()), Some(s));
        }
        assert_eq!(OrderStatus::parse("Paid"), None);
    }
}
