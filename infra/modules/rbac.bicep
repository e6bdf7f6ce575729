// Every permission the app's identity needs, and nothing more; all of them data-plane roles.
// Role definition ids are Azure built-in roles, listed at
// https://learn.microsoft.com/azure/role-based-access-control/built-in-roles
// (cross-checked against Azure-Samples/functions-quickstart-python-http-azd and
// Azure/azure-quickstart-templates function-app-flex-managed-identities):
//   Azure Service Bus Data Sender    69a216fc-b8fb-44d8-bc22-1f3c2cd27a39  (integration)
//   Azure Service Bus Data Receiver  4f6d3b9b-027b-4f4c-9142-0e5a2a2247e0  (integration)
//   Storage Blob Data Owner          b7e6dc6d-f1e8-4753-8033-0f276bb0955b  (storage)
//   Storage Queue Data Contributor   974c5e8b-45b9-4653-ba55-5f855dd0fb88  (storage)
//   Storage Table Data Contributor   0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3  (storage)
//   Monitoring Metrics Publisher     3913510d-42f4-4e42-8a64-420c390055eb  (monitor)
// Cosmos DB data access is not Azure RBAC but Cosmos' own: the built-in
// "Cosmos DB Built-in Data Contributor" sqlRoleDefinition 00000000-0000-0000-0000-000000000002
// (https://learn.microsoft.com/azure/cosmos-db/how-to-setup-rbac), assigned below with
// sqlRoleAssignments at account scope.

@description('Principal id of the app identity.')
param appPrincipalId string

@description('Optional principal id of a developer (azd sets AZURE_PRINCIPAL_ID), granted the Service Bus and Cosmos DB data roles for local runs; empty: none.')
param userPrincipalId string = ''

@description('Name of the Functions host storage account.')
param storageAccountName string

@description('Name of the Service Bus namespace.')
param serviceBusName string

@description('Name of the Cosmos DB account.')
param cosmosAccountName string

@description('Name of the Application Insights component.')
param applicationInsightsName string

var serviceBusDataSender = '69a216fc-b8fb-44d8-bc22-1f3c2cd27a39'
var serviceBusDataReceiver = '4f6d3b9b-027b-4f4c-9142-0e5a2a2247e0'
var storageBlobDataOwner = 'b7e6dc6d-f1e8-4753-8033-0f276bb0955b'
var storageQueueDataContributor = '974c5e8b-45b9-4653-ba55-5f855dd0fb88'
var storageTableDataContributor = '0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3'
var monitoringMetricsPublisher = '3913510d-42f4-4e42-8a64-420c390055eb'
var cosmosDataContributor = '00000000-0000-0000-0000-000000000002'

var serviceBusRoles = [
  serviceBusDataSender
  serviceBusDataReceiver
]
var storageRoles = [
  storageBlobDataOwner // host keys, leases, the deployment package
  storageQueueDataContributor // host internals (e.g. blob trigger receipts)
  storageTableDataContributor // host diagnostics events
]

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource serviceBus 'Microsoft.ServiceBus/namespaces@2021-11-01' existing = {
  name: serviceBusName
}

resource cosmos 'Microsoft.DocumentDB/databaseAccounts@2024-05-15' existing = {
  name: cosmosAccountName
}

resource applicationInsights 'Microsoft.Insights/components@2020-02-02' existing = {
  name: applicationInsightsName
}

resource appServiceBus 'Microsoft.Authorization/roleAssignments@2022-04-01' = [
  for role in serviceBusRoles: {
    name: guid(serviceBus.id, appPrincipalId, role)
    scope: serviceBus
    properties: {
      roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', role)
      principalId: appPrincipalId
      principalType: 'ServicePrincipal'
    }
  }
]

resource appStorage 'Microsoft.Authorization/roleAssignments@2022-04-01' = [
  for role in storageRoles: {
    name: guid(storage.id, appPrincipalId, role)
    scope: storage
    properties: {
      roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', role)
      principalId: appPrincipalId
      principalType: 'ServicePrincipal'
    }
  }
]

resource appMetrics 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(applicationInsights.id, appPrincipalId, monitoringMetricsPublisher)
  scope: applicationInsights
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', monitoringMetricsPublisher)
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
  }
}

resource appCosmos 'Microsoft.DocumentDB/databaseAccounts/sqlRoleAssignments@2024-05-15' = {
  parent: cosmos
  name: guid(cosmos.id, appPrincipalId, cosmosDataContributor)
  properties: {
    roleDefinitionId: '${cosmos.id}/sqlRoleDefinitions/${cosmosDataContributor}'
    principalId: appPrincipalId
    scope: cosmos.id
  }
}

resource userServiceBus 'Microsoft.Authorization/roleAssignments@2022-04-01' = [
  for role in (empty(userPrincipalId) ? [] : serviceBusRoles): {
    name: guid(serviceBus.id, userPrincipalId, role)
    scope: serviceBus
    properties: {
      roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', role)
      principalId: userPrincipalId
      principalType: 'User'
    }
  }
]

resource userCosmos 'Microsoft.DocumentDB/databaseAccounts/sqlRoleAssignments@2024-05-15' = if (!empty(userPrincipalId)) {
  parent: cosmos
  name: guid(cosmos.id, userPrincipalId, cosmosDataContributor)
  properties: {
    roleDefinitionId: '${cosmos.id}/sqlRoleDefinitions/${cosmosDataContributor}'
    principalId: userPrincipalId
    scope: cosmos.id
  }
}
