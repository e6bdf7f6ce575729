// Service Bus: one topic every envelope goes to (cadre/transports/servicebus.py) and one
// session-enabled subscription per agent type, filtered on the agent-type application
// property. SessionId = the agent key, so Service Bus hands one agent instance's messages
// to one receiver at a time, in order. SAS keys are off (disableLocalAuth): only Entra ID.

@description('Name of the Service Bus namespace.')
param name string

@description('Azure region.')
param location string

@description('Tags for the resources.')
param tags object

@description('Standard (pay per operation) or Premium (dedicated messaging units).')
@allowed([
  'Standard'
  'Premium'
])
param sku string = 'Standard'

@description('Messaging units when sku is Premium.')
@allowed([
  1
  2
  4
  8
  16
])
param premiumCapacity int = 1

@description('The topic every envelope is sent to (CADRE_SERVICEBUS_TOPIC).')
param topicName string

@description('Agent types and their subscription names: the agentTypes of infra/agent-types.json.')
param agentTypes array

@description('The application property the subscriptions filter on: filterProperty of infra/agent-types.json.')
param filterProperty string

@description('Deliveries before Service Bus dead-letters a message; keep it above CADRE_MAX_ATTEMPTS so Cadre records its own dead letters first.')
@minValue(1)
@maxValue(2000)
param maxDeliveryCount int = 10

@description('Peek-lock duration; the Functions host renews it while a step runs.')
param lockDuration string = 'PT1M'

@description('How long an undelivered message lives before it expires into the dead-letter queue.')
param messageTimeToLive string = 'P14D'

@description('Window in which a re-sent message id is dropped (outbox republish after a crash).')
param duplicateDetectionWindow string = 'PT10M'

resource namespace 'Microsoft.ServiceBus/namespaces@2021-11-01' = {
  name: name
  location: location
  tags: tags
  sku: {
    name: sku
    tier: sku
    capacity: (sku == 'Premium') ? premiumCapacity : null
  }
  properties: {
    disableLocalAuth: true
    minimumTlsVersion: '1.2'
    publicNetworkAccess: 'Enabled'
  }
}

resource topic 'Microsoft.ServiceBus/namespaces/topics@2021-11-01' = {
  parent: namespace
  name: topicName
  properties: {
    requiresDuplicateDetection: true
    duplicateDetectionHistoryTimeWindow: duplicateDetectionWindow
    defaultMessageTimeToLive: messageTimeToLive
    supportOrdering: true
    enablePartitioning: false
    maxSizeInMegabytes: 1024
  }
}

resource subscriptions 'Microsoft.ServiceBus/namespaces/topics/subscriptions@2021-11-01' = [
  for agent in agentTypes: {
    parent: topic
    name: agent.subscription
    properties: {
      requiresSession: true
      maxDeliveryCount: maxDeliveryCount
      lockDuration: lockDuration
      defaultMessageTimeToLive: messageTimeToLive
      deadLetteringOnMessageExpiration: true
      deadLetteringOnFilterEvaluationExceptions: true
    }
  }
]

// Replaces the catch-all '$Default' rule (1=1) each new subscription starts with, so a
// subscription receives only its own agent type's messages.
resource filters 'Microsoft.ServiceBus/namespaces/topics/subscriptions/rules@2021-11-01' = [
  for (agent, i) in agentTypes: {
    parent: subscriptions[i]
    name: '$Default'
    properties: {
      filterType: 'CorrelationFilter'
      correlationFilter: {
        properties: {
          '${filterProperty}': agent.agentType
        }
      }
    }
  }
]

output name string = namespace.name
output id string = namespace.id
output fullyQualifiedNamespace string = '${namespace.name}.servicebus.windows.net'
output topicName string = topic.name
output subscriptionNames array = [for (agent, i) in agentTypes: subscriptions[i].name]
