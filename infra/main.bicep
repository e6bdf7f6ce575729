// Cadre on Azure: `azd up` deploys everything here (docs/deploy.md).
//
//   Function App (Flex Consumption, Python) -- HTTP API + one Service Bus trigger per agent type
//   Service Bus topic + one session-enabled subscription per agent type (infra/agent-types.json)
//   Cosmos DB (serverless NoSQL) for agent state, Log Analytics + Application Insights + workbook
//   optional Azure OpenAI; one user-assigned identity with data-plane roles, no keys anywhere.
//
// The agent types come from the app's registry: regenerate the list after adding an agent with
//   cadre infra agent-types --write infra/agent-types.json
// (tests/infra checks that the committed file matches the registry).

targetScope = 'subscription'

@minLength(1)
@maxLength(64)
@description('Name of the azd environment; names the resource group and seeds resource names.')
param environmentName string

@minLength(1)
@description('Region of every resource (one that offers the Flex Consumption plan).')
@metadata({
  azd: {
    type: 'location'
  }
})
param location string

@description('Principal id of the developer running azd (AZURE_PRINCIPAL_ID): granted data access to Service Bus, Cosmos DB and Azure OpenAI for local runs. Empty: none.')
param principalId string = ''

@description('Service Bus tier: Standard (pay per operation) or Premium (dedicated).')
@allowed([
  'Standard'
  'Premium'
])
param serviceBusSku string = 'Standard'

@description('Deliveries before Service Bus dead-letters a message; above maxAttempts so Cadre records its own dead letters (with the reason) first.')
@minValue(2)
@maxValue(2000)
param serviceBusMaxDeliveryCount int = 10

@description('The topic every envelope goes to (CADRE_SERVICEBUS_TOPIC).')
param topicName string = 'cadre'

@description('Agent types to create subscriptions for; empty: the list in infra/agent-types.json (cadre infra agent-types). Items: { agentType, subscription }.')
param agentTypes array = []

@description('Cosmos DB capacity: Serverless (no idle cost) or Provisioned (autoscale).')
@allowed([
  'Serverless'
  'Provisioned'
])
param cosmosCapacityMode string = 'Serverless'

@description('Agents not written for this many seconds expire (CADRE_COSMOS_TTL_SECONDS); keep it above the longest human or timer wait.')
@minValue(3600)
param cosmosTtlSeconds int = 2592000

@description('Handler attempts before a message is dead-lettered by Cadre (CADRE_MAX_ATTEMPTS).')
@minValue(1)
param maxAttempts int = 5

@description('Python version of the Functions app: the one the real-worker suite runs (tests/functions/realworker), which requirements.txt is pinned for (azure-functions 2.x, azure-functions-runtime need 3.13).')
@allowed([
  '3.13'
])
param pythonVersion string = '3.13'

@description('Memory of each Function App instance, in MB.')
@allowed([
  512
  2048
  4096
])
param instanceMemoryMB int = 2048

@description('Upper bound on Function App instances.')
@minValue(40) // Flex Consumption: "the lowest maximum scale is currently 40" (flex-consumption-plan docs)
@maxValue(1000)
param maximumInstanceCount int = 100

@description('The model when deployOpenAi is false (CADRE_MODEL, see docs/teams.md): offline needs no endpoint.')
param cadreModel string = 'offline'

@description('Create an Azure OpenAI account and model deployment, and point CADRE_MODEL at it.')
param deployOpenAi bool = false

@description('Region of the Azure OpenAI account (the model must be offered there).')
param openAiLocation string = location

@description('Azure OpenAI deployment name.')
param openAiDeploymentName string = 'chat'

@description('Azure OpenAI model name.')
param openAiModelName string = 'gpt-4o-mini'

@description('Azure OpenAI model version.')
param openAiModelVersion string = '2024-07-18'

@description('Azure OpenAI deployment capacity, in thousands of tokens per minute.')
@minValue(1)
param openAiCapacity int = 10

@description('An existing Azure OpenAI endpoint to use when deployOpenAi is false (AZURE_OPENAI_ENDPOINT; grant the app identity Cognitive Services OpenAI User on it). Empty: none.')
param openAiEndpoint string = ''

@description('Azure OpenAI data-plane API version (AZURE_OPENAI_API_VERSION).')
param openAiApiVersion string = '2024-10-21'

@description('Record message payloads on spans (CADRE_TRACE_CONTENT); off by default for privacy.')
param traceContent bool = false

var resourceToken = toLower(uniqueString(subscription().id, environmentName, location))
var tags = {
  'azd-env-name': environmentName
}
var functionAppName = 'func-${resourceToken}'
var deploymentContainerName = 'app-package-${take(functionAppName, 32)}-${take(resourceToken, 7)}'
var cosmosDatabaseName = 'cadre'
var cosmosContainerName = 'cadre'
var generated = loadJsonContent('agent-types.json')
var subscribedAgentTypes = empty(agentTypes) ? generated.agentTypes : agentTypes

resource rg 'Microsoft.Resources/resourceGroups@2024-03-01' = {
  name: 'rg-${environmentName}'
  location: location
  tags: tags
}

module identity 'modules/identity.bicep' = {
  name: 'identity'
  scope: rg
  params: {
    name: 'id-${resourceToken}'
    location: location
    tags: tags
  }
}

module monitoring 'modules/monitoring.bicep' = {
  name: 'monitoring'
  scope: rg
  params: {
    logAnalyticsName: 'log-${resourceToken}'
    applicationInsightsName: 'appi-${resourceToken}'
    location: location
    tags: tags
  }
}

module storage 'modules/storage.bicep' = {
  name: 'storage'
  scope: rg
  params: {
    name: 'st${resourceToken}'
    location: location
    tags: tags
    deploymentContainerName: deploymentContainerName
  }
}

module serviceBus 'modules/servicebus.bicep' = {
  name: 'servicebus'
  scope: rg
  params: {
    name: 'sb-${resourceToken}'
    location: location
    tags: tags
    sku: serviceBusSku
    topicName: topicName
    agentTypes: subscribedAgentTypes
    filterProperty: generated.filterProperty
    maxDeliveryCount: serviceBusMaxDeliveryCount
  }
}

module cosmos 'modules/cosmos.bicep' = {
  name: 'cosmos'
  scope: rg
  params: {
    name: 'cosmos-${resourceToken}'
    location: location
    tags: tags
    capacityMode: cosmosCapacityMode
    databaseName: cosmosDatabaseName
    containerName: cosmosContainerName
  }
}

module openAi 'modules/openai.bicep' = if (deployOpenAi) {
  name: 'openai'
  scope: rg
  params: {
    name: 'oai-${resourceToken}'
    location: openAiLocation
    tags: tags
    deploymentName: openAiDeploymentName
    modelName: openAiModelName
    modelVersion: openAiModelVersion
    capacity: openAiCapacity
    appPrincipalId: identity.outputs.principalId
    userPrincipalId: principalId
  }
}

module rbac 'modules/rbac.bicep' = {
  name: 'rbac'
  scope: rg
  params: {
    appPrincipalId: identity.outputs.principalId
    userPrincipalId: principalId
    storageAccountName: storage.outputs.name
    serviceBusName: serviceBus.outputs.name
    cosmosAccountName: cosmos.outputs.name
    applicationInsightsName: monitoring.outputs.applicationInsightsName
  }
}

// Every setting the app and the Functions host read in Azure (tests/infra derives the list
// from the code and fails when one is missing). Connections are identity-based: an endpoint
// plus the identity's client id, never a key. The Application Insights connection string is
// not a secret here: local auth is off, so ingestion needs the identity's Entra token.
var appSettings = {
  AzureWebJobsStorage__accountName: storage.outputs.name
  AzureWebJobsStorage__credential: 'managedidentity'
  AzureWebJobsStorage__clientId: identity.outputs.clientId
  AZURE_CLIENT_ID: identity.outputs.clientId
  APPLICATIONINSIGHTS_CONNECTION_STRING: monitoring.outputs.connectionString
  APPLICATIONINSIGHTS_AUTHENTICATION_STRING: 'ClientId=${identity.outputs.clientId};Authorization=AAD'
  ServiceBusConnection__fullyQualifiedNamespace: serviceBus.outputs.fullyQualifiedNamespace
  ServiceBusConnection__credential: 'managedidentity'
  ServiceBusConnection__clientId: identity.outputs.clientId
  CADRE_SERVICEBUS_TOPIC: serviceBus.outputs.topicName
  CADRE_COSMOS_ENDPOINT: cosmos.outputs.endpoint
  CADRE_COSMOS_DATABASE: cosmos.outputs.databaseName
  CADRE_COSMOS_CONTAINER: cosmos.outputs.containerName
  CADRE_COSMOS_TTL_SECONDS: string(cosmosTtlSeconds)
  CADRE_APP: 'agents'
  CADRE_MAX_ATTEMPTS: string(maxAttempts)
  CADRE_RETRY_BASE_SECONDS: '0.5'
  CADRE_RETRY_MAX_SECONDS: '60'
  CADRE_SEEN_LIMIT: '64'
  CADRE_MAX_TASK_CHARS: '20000'
  CADRE_FUNCTIONS_RETRY_WAIT_SECONDS: '30' // well inside the subscriptions' 1-minute lock
  CADRE_MODEL: deployOpenAi ? 'azure-openai:${openAiDeploymentName}' : cadreModel
  CADRE_MODEL_TIMEOUT: '60'
  CADRE_MODEL_MAX_RETRIES: '3'
  CADRE_MODEL_MAX_CONCURRENT: '64'
  // The deployment's quota: a capacity unit is 1,000 TPM and 6 RPM. '0' (and '') is no limit
  // (cadre/settings.py), as for a model this template does not deploy. The limiter is per
  // instance: with several instances a 429 still pauses the one that hit it.
  CADRE_MODEL_RPM: deployOpenAi ? string(openAiCapacity * 6) : '0'
  CADRE_MODEL_TPM: deployOpenAi ? string(openAiCapacity * 1000) : '0'
  AZURE_OPENAI_ENDPOINT: deployOpenAi ? openAi.outputs.endpoint : openAiEndpoint
  AZURE_OPENAI_API_VERSION: openAiApiVersion
  CADRE_TRACE_CONTENT: traceContent ? 'true' : 'false'
  CADRE_TRACE_SENDS: 'true'
}

module functionApp 'modules/functionapp.bicep' = {
  name: 'functionapp'
  scope: rg
  dependsOn: [
    rbac // the host starts with its roles in place
  ]
  params: {
    name: functionAppName
    planName: 'plan-${resourceToken}'
    location: location
    tags: tags
    identityId: identity.outputs.id
    storageBlobEndpoint: storage.outputs.blobEndpoint
    deploymentContainerName: deploymentContainerName
    appSettings: appSettings
    pythonVersion: pythonVersion
    instanceMemoryMB: instanceMemoryMB
    maximumInstanceCount: maximumInstanceCount
  }
}

// azd stores UPPER_SNAKE outputs in the environment (.azure/<env>/.env). The Application
// Insights connection string is output under another name than the app setting, so that a
// shell with `azd env get-values` loaded does not make local `cadre` commands export to it
// (local auth is off: only the app's identity can ingest).
output AZURE_LOCATION string = location
output AZURE_TENANT_ID string = tenant().tenantId
output AZURE_RESOURCE_GROUP string = rg.name
output AZURE_FUNCTION_APP_NAME string = functionApp.outputs.name
output SERVICE_API_NAME string = functionApp.outputs.name
output SERVICE_API_URI string = functionApp.outputs.uri
output AZURE_IDENTITY_CLIENT_ID string = identity.outputs.clientId
output SERVICEBUS_NAMESPACE string = serviceBus.outputs.fullyQualifiedNamespace
output CADRE_SERVICEBUS_TOPIC string = serviceBus.outputs.topicName
output SERVICEBUS_SUBSCRIPTIONS array = serviceBus.outputs.subscriptionNames
output CADRE_COSMOS_ENDPOINT string = cosmos.outputs.endpoint
output CADRE_COSMOS_DATABASE string = cosmos.outputs.databaseName
output CADRE_COSMOS_CONTAINER string = cosmos.outputs.containerName
output AZURE_APPLICATIONINSIGHTS_CONNECTION_STRING string = monitoring.outputs.connectionString
output AZURE_WORKBOOK_ID string = monitoring.outputs.workbookId
output AZURE_OPENAI_ENDPOINT string = deployOpenAi ? openAi.outputs.endpoint : openAiEndpoint
