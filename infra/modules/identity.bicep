// The user-assigned managed identity the Function App runs as. Every data-plane permission
// (Service Bus, Cosmos DB, Storage, Application Insights, Azure OpenAI) is granted to it in
// rbac.bicep; no key or connection string is ever handed to the app.

@description('Name of the user-assigned managed identity.')
param name string

@description('Azure region.')
param location string

@description('Tags for the resource.')
param tags object

resource identity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: name
  location: location
  tags: tags
}

output id string = identity.id
output name string = identity.name
output principalId string = identity.properties.principalId
output clientId string = identity.properties.clientId
