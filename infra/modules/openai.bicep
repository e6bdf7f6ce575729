// Optional Azure OpenAI account and one model deployment (deployOpenAi in main.bicep).
// Keys are off: the app signs in with its identity (Cognitive Services OpenAI User role).

@description('Name (and custom subdomain) of the Azure OpenAI account.')
param name string

@description('Azure region (the model must be offered there).')
param location string

@description('Tags for the resources.')
param tags object

@description('Deployment name the app calls (CADRE_MODEL=azure-openai:<deployment>).')
param deploymentName string

@description('Model name, e.g. gpt-4o-mini.')
param modelName string

@description('Model version, e.g. 2024-07-18.')
param modelVersion string

@description('Deployment type, e.g. GlobalStandard or Standard.')
param deploymentSku string = 'GlobalStandard'

@description('Principal id of the app identity, granted Cognitive Services OpenAI User.')
param appPrincipalId string

@description('Optional principal id of a developer (azd sets AZURE_PRINCIPAL_ID), granted the same role for local runs; empty: none.')
param userPrincipalId string = ''

@description('Capacity in thousands of tokens per minute.')
@minValue(1)
param capacity int = 10

resource account 'Microsoft.CognitiveServices/accounts@2024-10-01' = {
  name: name
  location: location
  tags: tags
  kind: 'OpenAI'
  sku: {
    name: 'S0'
  }
  properties: {
    customSubDomainName: name
    disableLocalAuth: true
    publicNetworkAccess: 'Enabled'
  }
}

resource deployment 'Microsoft.CognitiveServices/accounts/deployments@2024-10-01' = {
  parent: account
  name: deploymentName
  sku: {
    name: deploymentSku
    capacity: capacity
  }
  properties: {
    model: {
      format: 'OpenAI'
      name: modelName
      version: modelVersion
    }
  }
}

// Cognitive Services OpenAI User: 5e0bd9bd-7b93-4f28-af87-19fc36ad61bd (Azure built-in roles,
// https://learn.microsoft.com/azure/role-based-access-control/built-in-roles/ai-machine-learning).
var openAiUserRole = '5e0bd9bd-7b93-4f28-af87-19fc36ad61bd'

resource appOpenAiUser 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(account.id, appPrincipalId, openAiUserRole)
  scope: account
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', openAiUserRole)
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
  }
}

resource userOpenAiUser 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!empty(userPrincipalId)) {
  name: guid(account.id, userPrincipalId, openAiUserRole)
  scope: account
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', openAiUserRole)
    principalId: userPrincipalId
    principalType: 'User'
  }
}

output name string = account.name
output id string = account.id
output endpoint string = account.properties.endpoint
output deploymentName string = deployment.name
