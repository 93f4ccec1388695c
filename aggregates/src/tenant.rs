//! The tenant: an organisation that owns users, datasets, keys and metering records.

mod command;
mod error;
mod event;

pub use command::TenantCommand;
pub use error::TenantError;
pub use event::TenantEvent;

use cqrs_es::event_sink::EventSink;
use cqrs_es::Aggregate;
use serde::{Deserialize, Serialize};

use crate::{TenantId, TenantName};

/// Tenant state, rebuilt from its events.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Tenant {
    created: Option<(TenantId, TenantName)>,
}

impl Aggregate for Tenant {
    const TYPE: &'static str = "tenant";
    type Command = TenantCommand;
    type Event = TenantEvent;
    type Error = TenantError;
    type Services = ();

    async fn handle(
        &mut self,
        command: TenantCommand,
        _: &(),
        sink: &EventSink<Self>,
    ) -> Result<(), TenantError> {
        match command {
            TenantCommand::Create { tenant_id, name } => match &self.created {
                // Creation is idempotent so that signup completion may be retried safely.
                Some((id, existing)) if *id == tenant_id && *existing == name => Ok(()),
                Some(_) => Err(TenantError::AlreadyExists),
                None => {
                    sink.write(TenantEvent::TenantCreated { tenant_id, name }, self)
                        .await;
                    Ok(())
                }
            },
        }
    }

    fn apply(&mut self, event: TenantEvent) {
        match event {
            TenantEvent::TenantCreated { tenant_id, name } => {
                self.created = Some((tenant_id, name))
            }
        }
    }
}

impl Tenant {
    /// The tenant's name, once created.
    pub fn name(&self) -> Option<&TenantName> {
        self.created.as_ref().map(|(_, name)| name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cqrs_es::test::TestFramework;

    type TenantTest = TestFramework<Tenant>;

    fn created() -> (TenantId, TenantName, TenantEvent) {
        let id = TenantId::generate();
        let name = TenantName::parse("Acme").unwrap();
        let event = TenantEvent::TenantCreated {
            tenant_id: id.clone(),
            name: name.clone(),
        };
        (id, name, event)
    }

    #[test]
    fn creating_a_tenant_records_it() {
        let (tenant_id, name, event) = created();
        TenantTest::with(())
            .given_no_previous_events()
            .when(TenantCommand::Create { tenant_id, name })
            .then_expect_events(vec![event]);
    }

    #[test]
    fn creating_the_same_tenant_again_changes_nothing() {
        let (tenant_id, name, event) = created();
        TenantTest::with(())
            .given(vec![event])
            .when(TenantCommand::Create { tenant_id, name })
            .then_expect_events(vec![]);
    }

    #[test]
    fn the_state_knows_the_name() {
        let (_, name, event) = created();
        let mut tenant = Tenant::default();
        assert_eq!(tenant.name(), None);
        tenant.apply(event);
        assert_eq!(tenant.name(), Some(&name));
    }

    #[test]
    fn creating_the_same_name_under_another_id_is_refused() {
        let (_, name, event) = created();
        TenantTest::with(())
            .given(vec![event])
            .when(TenantCommand::Create {
                tenant_id: TenantId::generate(),
                name,
            })
            .then_expect_error(TenantError::AlreadyExists);
    }

    #[test]
    fn creating_over_another_tenant_is_refused() {
        let (tenant_id, _, event) = created();
        TenantTest::with(())
            .given(vec![event])
            .when(TenantCommand::Create {
                tenant_id,
                name: TenantName::parse("Other").unwrap(),
            })
            .then_expect_error(TenantError::AlreadyExists);
    }
}
