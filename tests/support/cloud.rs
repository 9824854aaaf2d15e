//! The emulated cloud: the real state machine (`infra/statemachine/run.asl.json`)
//! executing in moto (server mode, started by `scripts/test.sh`), SQS queues
//! there, and in-process pollers calling the same handlers the Lambdas use.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use agentrun::adapters::aws::{
    finalize_message, sdk_config, DynamoEventFeed, DynamoHotStore, StepFunctionsOrchestrator,
    StepWorker,
};
use agentrun::mock_llm::MockScript;
use agentrun::ports::Orchestrator;
use aws_sdk_dynamodb::types::ScalarAttributeType;
use aws_sdk_sqs::types::{MessageSystemAttributeName, QueueAttributeName};

use crate::{start_app, TestApp};

pub fn aws_endpoint() -> String {
    std::env::var("AGENTRUN_TEST_AWS_ENDPOINT")
        .expect("AGENTRUN_TEST_AWS_ENDPOINT is not set: run the tests with `make test`, which starts the AWS emulator")
}

pub struct Cloud {
    pub app: TestApp,
    /// The emulator's SDK settings.
    pub config: aws_config::SdkConfig,
    pub state_machine_arn: String,
    pub sfn: aws_sdk_sfn::Client,
    pub sqs: aws_sdk_sqs::Client,
    pub orchestrator: Arc<StepFunctionsOrchestrator>,
    pub step_queue: String,
    /// The DynamoDB events table the engine mirrors events to.
    pub events_table: String,
    /// When set, the step poller hands every message to the worker twice.
    pub deliver_twice: Arc<AtomicBool>,
    /// When set, the next step message is executed but never answered nor
    /// deleted — as if the worker died after the ledger commit.
    pub lose_next_answer: Arc<AtomicBool>,
    /// When set, the next step message is taken off the queue and dropped
    /// unanswered — as if the worker died the moment it received it (no
    /// heartbeat, no answer, no redelivery).
    pub drop_next_message: Arc<AtomicBool>,
    /// The hot store's table.
    pub hot_table: String,
    /// Step messages as the poller received them: when, and the body.
    pub received: Arc<std::sync::Mutex<Vec<(std::time::Instant, String)>>>,
    pollers: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Cloud {
    fn drop(&mut self) {
        for poller in &self.pollers {
            poller.abort();
        }
    }
}

async fn create_queue(sqs: &aws_sdk_sqs::Client, name: &str) -> String {
    sqs.create_queue()
        .queue_name(name)
        .attributes(QueueAttributeName::VisibilityTimeout, "5")
        .send()
        .await
        .expect("create queue")
        .queue_url()
        .expect("queue url")
        .to_owned()
}

/// A fresh events table (`run_id` string, `seq` number), as Terraform will create it.
pub async fn create_events_table(config: &aws_config::SdkConfig) -> String {
    create_table(
        config,
        "events",
        ("run_id", ScalarAttributeType::S),
        ("seq", ScalarAttributeType::N),
    )
    .await
}

/// A fresh hot-store table (`pk`, `sk` strings), as Terraform will create it.
pub async fn create_hot_table(config: &aws_config::SdkConfig) -> String {
    create_table(
        config,
        "hot",
        ("pk", ScalarAttributeType::S),
        ("sk", ScalarAttributeType::S),
    )
    .await
}

async fn create_table(
    config: &aws_config::SdkConfig,
    prefix: &str,
    hash: (&str, ScalarAttributeType),
    range: (&str, ScalarAttributeType),
) -> String {
    use aws_sdk_dynamodb::types::{AttributeDefinition, BillingMode, KeySchemaElement, KeyType};
    let table = format!("{prefix}-{}", uuid::Uuid::new_v4().simple());
    let attribute = |(name, kind): (&str, ScalarAttributeType)| {
        AttributeDefinition::builder()
            .attribute_name(name)
            .attribute_type(kind)
            .build()
            .expect("attribute definition")
    };
    let key = |name: &str, kind| {
        KeySchemaElement::builder()
            .attribute_name(name)
            .key_type(kind)
            .build()
            .expect("key schema")
    };
    aws_sdk_dynamodb::Client::new(config)
        .create_table()
        .table_name(&table)
        .billing_mode(BillingMode::PayPerRequest)
        .key_schema(key(hash.0, KeyType::Hash))
        .key_schema(key(range.0, KeyType::Range))
        .attribute_definitions(attribute(hash))
        .attribute_definitions(attribute(range))
        .send()
        .await
        .expect("create table");
    table
}

/// Receives, handles and (on success) deletes messages, forever; the
/// handler gets the body and when SQS accepted the message, as the Lambda
/// event source passes them.
fn poll<F, Fut>(
    sqs: aws_sdk_sqs::Client,
    queue: String,
    twice: Arc<AtomicBool>,
    handle: F,
) -> tokio::task::JoinHandle<()>
where
    F: Fn(String, Option<chrono::DateTime<chrono::Utc>>) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    tokio::spawn(async move {
        loop {
            let received = sqs
                .receive_message()
                .queue_url(&queue)
                .max_number_of_messages(10)
                .wait_time_seconds(1)
                .message_system_attribute_names(MessageSystemAttributeName::SentTimestamp)
                .send()
                .await;
            let Ok(received) = received else {
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            };
            for message in received.messages() {
                let body = message.body().unwrap_or_default().to_owned();
                let sent_at = message
                    .attributes()
                    .and_then(|a| a.get(&MessageSystemAttributeName::SentTimestamp))
                    .and_then(|millis| millis.parse().ok())
                    .and_then(chrono::DateTime::from_timestamp_millis);
                let mut done = handle(body.clone(), sent_at).await;
                if twice.load(Ordering::SeqCst) {
                    done = handle(body, sent_at).await && done;
                }
                if done {
                    if let Some(receipt) = message.receipt_handle() {
                        let _ = sqs
                            .delete_message()
                            .queue_url(&queue)
                            .receipt_handle(receipt)
                            .send()
                            .await;
                    }
                }
            }
        }
    })
}

/// How a test's cloud differs from the committed one.
pub struct CloudSetup {
    /// The state machine definition (default: the committed one).
    pub asl: String,
    /// What the step worker and the orchestrator go by; it should be what
    /// `asl` was generated from.
    pub policy: agentrun::policy::StepPolicy,
    /// Where the hot store's DynamoDB requests go (e.g. a fault-injecting
    /// proxy in front of the emulator); default: the emulator.
    pub hot_endpoint: Option<String>,
    /// The step worker's Step Functions client (e.g. one that records calls).
    pub worker_sfn: Option<aws_sdk_sfn::Client>,
    /// Wraps the API's orchestrator (e.g. to inject faults).
    #[allow(clippy::type_complexity)]
    pub wrap: Box<dyn FnOnce(Arc<dyn Orchestrator>) -> Arc<dyn Orchestrator> + Send>,
}

impl Default for CloudSetup {
    fn default() -> Self {
        Self {
            asl: include_str!("../../infra/statemachine/run.asl.json").to_owned(),
            policy: agentrun::policy::StepPolicy::default(),
            hot_endpoint: None,
            worker_sfn: None,
            wrap: Box::new(|orchestrator| orchestrator),
        }
    }
}

/// The platform in cloud mode against the emulator, with its own queues and
/// the committed state machine.
pub async fn spawn_cloud(scripts: HashMap<String, MockScript>) -> Cloud {
    spawn_cloud_setup(scripts, CloudSetup::default()).await
}

/// The same with another state machine definition (e.g. a short timeout).
pub async fn spawn_cloud_with(scripts: HashMap<String, MockScript>, asl: &str) -> Cloud {
    let setup = CloudSetup {
        asl: asl.to_owned(),
        ..CloudSetup::default()
    };
    spawn_cloud_setup(scripts, setup).await
}

/// The same, with the API's orchestrator wrapped (e.g. to inject faults).
pub async fn spawn_cloud_wrapped(
    scripts: HashMap<String, MockScript>,
    asl: &str,
    wrap: impl FnOnce(Arc<dyn Orchestrator>) -> Arc<dyn Orchestrator> + Send + 'static,
) -> Cloud {
    let setup = CloudSetup {
        asl: asl.to_owned(),
        wrap: Box::new(wrap),
        ..CloudSetup::default()
    };
    spawn_cloud_setup(scripts, setup).await
}

/// The platform in cloud mode on fresh queues, tables and a state machine
/// of `setup.asl`.
pub async fn spawn_cloud_setup(scripts: HashMap<String, MockScript>, setup: CloudSetup) -> Cloud {
    let endpoint = aws_endpoint();
    let config = sdk_config(Some(&endpoint)).await;
    let sqs = aws_sdk_sqs::Client::new(&config);
    let sfn = aws_sdk_sfn::Client::new(&config);
    let suffix = uuid::Uuid::new_v4().simple().to_string();
    let step_queue = create_queue(&sqs, &format!("steps-{suffix}")).await;
    let finalize_queue = create_queue(&sqs, &format!("finalize-{suffix}")).await;
    let definition = setup
        .asl
        .replace("${step_queue_url}", &step_queue)
        .replace("${finalize_queue_url}", &finalize_queue);
    let state_machine_arn = sfn
        .create_state_machine()
        .name(format!("run-{suffix}"))
        .definition(definition)
        .role_arn("arn:aws:iam::123456789012:role/agentrun-run")
        .send()
        .await
        .expect("create state machine")
        .state_machine_arn()
        .to_owned();
    let resources = CloudResources {
        step_queue,
        finalize_queue,
        state_machine_arn,
        hot_table: create_hot_table(&config).await,
        events_table: create_events_table(&config).await,
    };
    spawn_cloud_on_setup(&endpoint, resources, scripts, setup).await
}

/// What the cloud path runs on: queues, state machine and tables (made by
/// a test, or by Terraform).
pub struct CloudResources {
    pub step_queue: String,
    pub finalize_queue: String,
    pub state_machine_arn: String,
    pub hot_table: String,
    pub events_table: String,
}

/// The platform in cloud mode on existing resources at `endpoint`, with the
/// step and finalize handlers polling its queues.
pub async fn spawn_cloud_on(
    endpoint: &str,
    resources: CloudResources,
    scripts: HashMap<String, MockScript>,
) -> Cloud {
    spawn_cloud_on_setup(endpoint, resources, scripts, CloudSetup::default()).await
}

async fn spawn_cloud_on_setup(
    endpoint: &str,
    resources: CloudResources,
    scripts: HashMap<String, MockScript>,
    setup: CloudSetup,
) -> Cloud {
    let config = sdk_config(Some(endpoint)).await;
    let hot_config = sdk_config(Some(setup.hot_endpoint.as_deref().unwrap_or(endpoint))).await;
    let sqs = aws_sdk_sqs::Client::new(&config);
    let sfn = aws_sdk_sfn::Client::new(&config);
    let CloudResources {
        step_queue,
        finalize_queue,
        state_machine_arn,
        hot_table,
        events_table,
    } = resources;
    let orchestrator = Arc::new(StepFunctionsOrchestrator::for_policy(
        &config,
        &state_machine_arn,
        setup.policy.clone(),
    ));
    let hot = Arc::new(DynamoHotStore::new(&hot_config, hot_table.clone()));
    let app = start_app(
        scripts,
        Some((setup.wrap)(orchestrator.clone())),
        |engine, url| {
            // The cloud path goes through a pooler in AWS: its ledger sends
            // unnamed statements, leaving nothing in the session.
            engine.ledger = agentrun::ledger::Ledger::connect_with(
                url,
                16,
                agentrun::ledger::StatementMode::Unnamed,
            )
            .expect("ledger pool");
            engine.hot = Arc::new(agentrun::adapters::degraded::Degradable::new(
                hot,
                engine.ledger.clone(),
            ));
            engine.feed = Arc::new(DynamoEventFeed::new(
                &config,
                events_table.clone(),
                engine.ledger.clone(),
            ));
        },
    )
    .await;

    let deliver_twice = Arc::new(AtomicBool::new(false));
    let worker = Arc::new(StepWorker::new(
        app.platform.engine.clone(),
        setup.worker_sfn.unwrap_or_else(|| sfn.clone()),
        setup.policy.clone(),
    ));
    let lose_next_answer = Arc::new(AtomicBool::new(false));
    let lose = lose_next_answer.clone();
    let drop_next_message = Arc::new(AtomicBool::new(false));
    let drop_message = drop_next_message.clone();
    let engine = app.platform.engine.clone();
    let budget = setup.policy.step_budget();
    let received: Arc<std::sync::Mutex<Vec<(std::time::Instant, String)>>> = Arc::default();
    let receipts = received.clone();
    let step_poller = poll(
        sqs.clone(),
        step_queue.clone(),
        deliver_twice.clone(),
        move |body, sent_at| {
            let (worker, lose, engine) = (worker.clone(), lose.clone(), engine.clone());
            let dropped = drop_message.swap(false, Ordering::SeqCst);
            receipts
                .lock()
                .unwrap()
                .push((std::time::Instant::now(), body.clone()));
            async move {
                if dropped {
                    return true;
                }
                if lose.swap(false, Ordering::SeqCst) {
                    let message: serde_json::Value = serde_json::from_str(&body).unwrap();
                    let run = message["run_id"].as_str().unwrap().parse().unwrap();
                    let step_no = message["step_no"].as_i64().unwrap() as i32;
                    let deadline = tokio::time::Instant::now() + budget;
                    engine.execute_step(run, step_no, deadline).await.unwrap();
                    return false;
                }
                worker.handle(&body, sent_at).await.is_ok()
            }
        },
    );
    let engine = app.platform.engine.clone();
    let finalize_poller = poll(
        sqs.clone(),
        finalize_queue,
        Arc::new(AtomicBool::new(false)),
        move |body, _| {
            let engine = engine.clone();
            async move { finalize_message(&engine, &body).await.is_ok() }
        },
    );
    Cloud {
        app,
        config,
        state_machine_arn,
        sfn,
        sqs,
        orchestrator,
        step_queue,
        events_table,
        deliver_twice,
        lose_next_answer,
        drop_next_message,
        hot_table,
        received,
        pollers: vec![step_poller, finalize_poller],
    }
}

impl Cloud {
    /// The error names of the run's failed Step tasks, in order.
    pub async fn task_failures(&self, run_id: &str) -> Vec<String> {
        let arn = self.orchestrator.execution_arn(run_id.parse().unwrap());
        let history = self
            .sfn
            .get_execution_history()
            .execution_arn(&arn)
            .max_results(1000)
            .send()
            .await
            .unwrap();
        history
            .events()
            .iter()
            .filter_map(|e| e.task_failed_event_details())
            .filter_map(|d| d.error().map(str::to_owned))
            .collect()
    }

    /// Executions of the run's name (the execution is named after the run).
    pub async fn executions_named(&self, run_id: &str) -> usize {
        self.sfn
            .list_executions()
            .state_machine_arn(&self.state_machine_arn)
            .max_results(1000)
            .send()
            .await
            .unwrap()
            .executions()
            .iter()
            .filter(|e| e.name() == run_id)
            .count()
    }

    /// Waits for the run's execution to end; returns its status and history event types.
    pub async fn execution(&self, run_id: &str) -> (String, Vec<(String, Option<String>)>) {
        for _ in 0..200 {
            let (status, events) = self.execution_now(run_id).await;
            if status != "RUNNING" {
                return (status, events);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("execution of run {run_id} still running");
    }

    /// The run's execution as it is now: its status and history event types.
    pub async fn execution_now(&self, run_id: &str) -> (String, Vec<(String, Option<String>)>) {
        let arn = self.orchestrator.execution_arn(run_id.parse().unwrap());
        let described = self
            .sfn
            .describe_execution()
            .execution_arn(&arn)
            .send()
            .await
            .unwrap();
        let history = self
            .sfn
            .get_execution_history()
            .execution_arn(&arn)
            .max_results(1000)
            .send()
            .await
            .unwrap();
        let events = history
            .events()
            .iter()
            .map(|e| {
                let name = e.state_entered_event_details().map(|d| d.name().to_owned());
                (e.r#type().as_str().to_owned(), name)
            })
            .collect();
        (described.status().as_str().to_owned(), events)
    }
}

/// Records the Step Functions calls a client makes (operation, when), for
/// a worker whose heartbeats a test checks.
#[derive(Clone, Debug, Default)]
pub struct SfnCalls(Arc<std::sync::Mutex<Vec<(String, std::time::Instant)>>>);

impl SfnCalls {
    /// A client on `config` that records into this.
    pub fn client(&self, config: &aws_config::SdkConfig) -> aws_sdk_sfn::Client {
        let config = aws_sdk_sfn::config::Builder::from(config)
            .interceptor(self.clone())
            .build();
        aws_sdk_sfn::Client::from_conf(config)
    }

    /// When each call of `operation` (e.g. `SendTaskHeartbeat`) went out.
    pub fn times(&self, operation: &str) -> Vec<std::time::Instant> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter(|(name, _)| name == operation)
            .map(|(_, at)| *at)
            .collect()
    }
}

impl aws_sdk_sfn::config::Intercept for SfnCalls {
    fn name(&self) -> &'static str {
        "record-step-functions-calls"
    }

    fn read_before_transmit(
        &self,
        context: &aws_sdk_sfn::config::interceptors::BeforeTransmitInterceptorContextRef<'_>,
        _components: &aws_sdk_sfn::config::RuntimeComponents,
        _cfg: &mut aws_sdk_sfn::config::ConfigBag,
    ) -> Result<(), aws_sdk_sfn::error::BoxError> {
        if let Some(target) = context.request().headers().get("x-amz-target") {
            let operation = target.rsplit('.').next().unwrap_or(target).to_owned();
            self.0
                .lock()
                .unwrap()
                .push((operation, std::time::Instant::now()));
        }
        Ok(())
    }
}
